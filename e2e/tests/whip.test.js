// WHIP: the Rust client (sfumato-client) publishes, a browser viewer decodes it.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { CLIENT_BIN, Session, waitForMedia } from '../lib/harness.js';

const skip = existsSync(CLIENT_BIN)
  ? false
  : `${CLIENT_BIN} does not exist (build it, or set SFUMATO_CLIENT_BIN)`;

let s;
let client;

before(async () => {
  if (!skip) s = await Session.start({ name: 'whip', rtcPort: 41400, workers: 2, placement: 'spread' });
});
after(async () => {
  if (client && client.exitCode === null) client.kill('SIGTERM');
  await s?.close();
});

test('a WHIP publish by the Rust client is seen in a browser', { skip }, () =>
  s.run(async () => {
    const viewer = await s.open('/?room=whiproom&name=v&publish=0', 'viewer');
    await viewer.waitForSelector('#controls:not([hidden])', { timeout: 15000 });

    const output = [];
    client = spawn(CLIENT_BIN, ['whip', '--url', `${s.server.url}/whip/whiproom`, '--duration-secs', '20'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    client.stdout.on('data', (d) => output.push(String(d)));
    client.stderr.on('data', (d) => output.push(String(d)));
    try {
      await waitForMedia(viewer, { video: 1, timeout: 20000 });
    } catch (err) {
      err.message += `\n--- sfumato-client output (exit ${client.exitCode}) ---\n${output.join('').slice(-3000)}`;
      throw err;
    }
    await viewer.waitForSelector('.tile[data-name="whip"]', { timeout: 5000 });
  }));
