// The demo page on a server started with an API key: it joins with the token= URL parameter
// (tokens made by `sfumato token create`, the name taken from them) and is refused without it.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { SERVER_BIN, Session, tileNames, waitForMedia } from '../lib/harness.js';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-0123456789abcdef0123456789';

/** The last line `sfumato token create` prints. */
function token(...args) {
  const out = execFileSync(SERVER_BIN, ['token', 'create', '--api-key', KEY, '--api-secret', SECRET, ...args], {
    encoding: 'utf8',
  });
  return out.trim().split('\n').pop();
}

const participant = (identity) =>
  token('--room', 'keyed', '--identity', identity, '--name', identity.toUpperCase(), '--grant', 'join,publish,subscribe', '--ttl', '10m');

let s;

before(async () => {
  s = await Session.start({ name: 'tokens', rtcPort: 42000, workers: 1, args: ['--api-key', KEY, '--api-secret', SECRET] });
  s.server.token = token('--identity', 'ops', '--grant', 'admin');
});
after(() => s?.close());

test('the demo page joins with token= and is refused without it', () =>
  s.run(async () => {
    const ann = await s.open(`/?room=keyed&token=${participant('ann')}`, 'ann');
    const ben = await s.open(`/?room=keyed&token=${participant('ben')}`, 'ben');
    await Promise.all([ann, ben].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));
    assert.deepEqual(await tileNames(ann), ['BEN'], "ann's page shows ben by his token's name");
    assert.deepEqual(await tileNames(ben), ['ANN']);

    // No token, or one for another room: the join is refused and the page says why.
    for (const [label, query, reason] of [
      ['mallory', '/?room=keyed&name=mallory', /requires an access token/],
      ['eve', `/?room=keyed&token=${token('--room', 'other', '--identity', 'eve', '--grant', 'join')}`, /room `other`/],
    ]) {
      const page = await s.open(query, label);
      await page.waitForSelector('#left:not([hidden])', { timeout: 15000 });
      const status = await page.textContent('#status');
      assert.match(status, reason, `${label}: ${status}`);
    }

    const { status, body } = await s.server.getJson('/api/rooms/keyed');
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(body.participants.map((p) => p.name).sort(), ['ANN', 'BEN']);
  }));
