// Serves web/ and client/ to a browser context the way the server does (GET / = web/index.html,
// /app.js, /style.css, /sdk/<file> = client/<file>), through Playwright routing: no HTTP server.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from './harness.js';

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.ts': 'text/plain' };

/** Maps a URL path to a repository file, or null. */
export function repoFileFor(urlPath) {
  if (urlPath === '/' || urlPath === '/index.html') return path.join(REPO_ROOT, 'web', 'index.html');
  let m = urlPath.match(/^\/sdk\/([A-Za-z0-9_.-]+)$/);
  if (m) return path.join(REPO_ROOT, 'client', m[1]);
  m = urlPath.match(/^\/([A-Za-z0-9_-]+\.(?:js|css))$/);
  if (m) return path.join(REPO_ROOT, 'web', m[1]);
  return null;
}

/** Routes every request to `origin` (e.g. http://localhost:47999) to the repository's files. */
export async function serveRepoFiles(context, origin) {
  await context.route(`${origin}/**`, async (route) => {
    const url = new URL(route.request().url());
    const file = repoFileFor(url.pathname);
    if (!file) return route.fulfill({ status: 404, body: 'not found' });
    try {
      const body = await readFile(file);
      return route.fulfill({ status: 200, body, contentType: TYPES[path.extname(file)] ?? 'application/octet-stream' });
    } catch {
      return route.fulfill({ status: 404, body: 'not found' });
    }
  });
}
