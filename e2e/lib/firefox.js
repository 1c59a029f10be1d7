// Firefox participants: Debian's firefox-esr, headless, driven by puppeteer-core over
// WebDriver BiDi, in the same Session (server, logs, diagnostics) as the Chromium pages.
// Its pages answer evaluate(fn, arg), waitForSelector, click, $$eval and `label` as the
// Playwright pages do, so the stats helpers of harness.js (inboundStats, waitForMedia, …)
// read them too.

import puppeteer from 'puppeteer-core';
import { RECORD_PEER_CONNECTIONS } from './harness.js';

export const FIREFOX_BIN = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';

/**
 * Preferences of the test profile: no more are needed. What ICE needs is outside Firefox:
 * it gathers no loopback candidate (`media.peerconnection.ice.loopback` did not change that
 * here), so where loopback is the only interface it gathers nothing, and it pairs a
 * loopback candidate only with a loopback one, so it reaches no server that announces
 * 127.0.0.1. In run.sh's namespace it gathers 192.0.2.1 (the veth address) and connects to a
 * server that announces that address (tests/firefox.test.js).
 */
export const FIREFOX_PREFS = {
  // A fake camera (a colour test pattern) and microphone (a tone), without a prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
};

/** Launches a headless Firefox ESR with FIREFOX_PREFS (in a temporary profile puppeteer
 * makes and removes). */
export function launchFirefox() {
  return puppeteer.launch({
    browser: 'firefox',
    protocol: 'webDriverBiDi',
    executablePath: FIREFOX_BIN,
    headless: true,
    extraPrefsFirefox: FIREFOX_PREFS,
  });
}

/**
 * Opens `pathAndQuery` of `session`'s server in Firefox, in a browser context of its own (the
 * session's Firefox is launched on first use and closed with the session), with the init
 * script that records every RTCPeerConnection; console lines and page errors go to the
 * session's log under `label`.
 */
export async function openFirefox(session, pathAndQuery, label = pathAndQuery) {
  if (!session.firefox) {
    session.firefox = await launchFirefox();
    session.onClose(() => session.firefox.close());
  }
  const context = await session.firefox.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 960, height: 640 });
  await page.evaluateOnNewDocument(RECORD_PEER_CONNECTIONS);
  page.on('console', (m) => session._log(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => session._log(`[${label}] pageerror: ${e?.message ?? e}`));
  await page.goto(/^https?:/.test(pathAndQuery) ? pathAndQuery : session.server.url + pathAndQuery);
  page.label = label;
  session.pages.push(page);
  return page;
}
