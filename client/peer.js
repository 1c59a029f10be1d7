// RTCPeerConnection helpers shared by the publish and subscribe sides (non-trickle ICE).

/** Default RTCPeerConnection configuration: the server is ICE-lite with host candidates. */
export const DEFAULT_RTC_CONFIG = Object.freeze({
  bundlePolicy: 'max-bundle',
  rtcpMuxPolicy: 'require',
});

/**
 * Resolves once ICE gathering is complete, or after `timeoutMs` (gathering can hang on some
 * networks; the server does not need our candidates, it learns our address from STUN checks).
 * @param {RTCPeerConnection} pc
 * @param {number} [timeoutMs]
 */
export function waitForIceGathering(pc, timeoutMs = 2000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (ev) => {
      if (!ev.candidate) done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/**
 * Creates an offer, applies it and returns the local SDP once gathering is done.
 * @param {RTCPeerConnection} pc
 * @param {number} gatherTimeoutMs
 */
export async function createOfferSdp(pc, gatherTimeoutMs) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitForIceGathering(pc, gatherTimeoutMs);
  return pc.localDescription.sdp;
}

/**
 * Applies a remote offer, answers it and returns the local SDP once gathering is done.
 * @param {RTCPeerConnection} pc
 * @param {string} sdp
 * @param {number} gatherTimeoutMs
 */
export async function answerSdp(pc, sdp, gatherTimeoutMs) {
  await pc.setRemoteDescription({ type: 'offer', sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  await waitForIceGathering(pc, gatherTimeoutMs);
  return pc.localDescription.sdp;
}

/** Closes a peer connection, ignoring errors. */
export function closePc(pc) {
  if (!pc) return;
  try {
    pc.close();
  } catch {
    /* already closed */
  }
}

/**
 * Runs async tasks one after another (SDP exchanges must not interleave).
 */
export class SerialQueue {
  constructor() {
    this._tail = Promise.resolve();
  }

  /** @template T @param {() => Promise<T>} task @returns {Promise<T>} */
  run(task) {
    const result = this._tail.then(task);
    this._tail = result.catch(() => {});
    return result;
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Reconnect delay for attempt n (1-based): exponential from `base`, capped, with ±20% jitter.
 */
export function backoffDelay(attempt, base = 500, max = 10000) {
  const raw = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  const jitter = raw * 0.2 * (Math.random() * 2 - 1);
  return Math.round(raw + jitter);
}
