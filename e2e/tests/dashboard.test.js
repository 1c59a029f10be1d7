// The live dashboard: two browsers in a room, the dashboard open in a third page shows the
// room with both participants and their tracks, and its graphs (server-drawn SVG) move.
// DASHBOARD_SCREENSHOT=1 saves the page to docs/dashboard.png.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { REPO_ROOT, Session, waitFor, waitForMedia } from '../lib/harness.js';

let s;

before(async () => {
  s = await Session.start({ name: 'dashboard', rtcPort: 42100, workers: 2, placement: 'spread' });
});
after(() => s?.close());

// What the dashboard page shows of room `dash`: each participant's name and tracks, and
// the points of every graph on the page.
const readBoard = (page) =>
  page.evaluate(() => {
    const room = document.querySelector('.room[data-room="dash"]');
    const participants = room
      ? [...room.querySelectorAll('.participant')].map((p) => ({
        name: p.querySelector('.who')?.textContent,
        tracks: [...p.querySelectorAll('.track')].map((t) => ({
          direction: t.dataset.direction,
          bitrate: t.querySelector('.bitrate')?.textContent,
          points: t.querySelector('[data-graph] polyline')?.getAttribute('points') ?? '',
        })),
      }))
      : [];
    const graphs = [...document.querySelectorAll('[data-graph] polyline')].map((l) => l.getAttribute('points'));
    return { participants, graphs, status: document.getElementById('status')?.textContent };
  });

test('the dashboard shows a room with two browsers and its graphs move', () =>
  s.run(async () => {
    const ann = await s.open('/?room=dash&name=ann', 'ann');
    const ben = await s.open('/?room=dash&name=ben', 'ben');
    await Promise.all([ann, ben].map((p) => waitForMedia(p, { video: 1, audio: 1, timeout: 45000 })));

    const dash = await s.open('/dashboard', 'dashboard');
    await dash.setViewportSize({ width: 1280, height: 900 });
    let board;
    await waitFor(
      async () => {
        board = await readBoard(dash);
        const names = board.participants.map((p) => p.name).sort();
        if (names.join() !== 'ann,ben') return false;
        // Each publishes audio and video and receives the other's: four rows, all moving.
        return board.participants.every(
          (p) => p.tracks.filter((t) => t.direction === 'publish').length === 2
            && p.tracks.filter((t) => t.direction === 'receive').length === 2
            && p.tracks.some((t) => t.direction === 'receive' && /[kM]b\/s/.test(t.bitrate)),
        );
      },
      { timeout: 30000, message: 'the dashboard shows ann and ben with their tracks', describe: () => JSON.stringify(board) },
    );

    // The graphs move: a track's bitrate line gains points, and the set of graphs changes.
    const first = await readBoard(dash);
    const pointsOf = (b) => b.participants.flatMap((p) => p.tracks.map((t) => t.points));
    await waitFor(
      async () => {
        board = await readBoard(dash);
        const grown = pointsOf(board).some((pts, i) => pts.split(' ').length > (pointsOf(first)[i] ?? '').split(' ').length);
        return grown && board.graphs.join('|') !== first.graphs.join('|');
      },
      { timeout: 15000, message: 'the graphs change', describe: () => JSON.stringify({ first, board }) },
    );
    assert.ok(board.graphs.length >= 3 + 2 * 2 + 8, `node, worker and track graphs: ${board.graphs.length}`);

    // A few seconds later, the graphs have moved on again.
    const later = board;
    await waitFor(async () => (await readBoard(dash)).graphs.join('|') !== later.graphs.join('|'), {
      timeout: 10000,
      message: 'the graphs keep changing',
    });

    if (process.env.DASHBOARD_SCREENSHOT === '1') {
      // A little history on the graphs first.
      await dash.waitForTimeout(20000);
      await dash.screenshot({ path: path.join(REPO_ROOT, 'docs', 'dashboard.png'), fullPage: true });
    }
  }));
