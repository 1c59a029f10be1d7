// Per-track statistics from the browser's own WebRTC stats (RTCRtpSender/Receiver.getStats):
// bitrate and loss over the interval since the previous sample, round-trip time, the
// encodings sent and, for a received video, its resolution and frame rate. Keeps the
// previous sample's counters; knows nothing of rooms.

/** The selected candidate pair's round-trip time in ms (the ICE checks measure it), or null. */
function candidateRtt(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
  });
  if (!pair) {
    report.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  return typeof pair?.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null;
}

const round = (x) => (x == null ? null : Math.round(x));

export class StatsSampler {
  constructor() {
    /** key → {bytes, packets, lost, t} of the previous sample */
    this._prev = new Map();
    this._next = new Map();
    this._at = 0;
  }

  /** Whether there is no recent sample to measure rates against (first use, or > 30 s ago). */
  stale(now = performance.now()) {
    return !this._at || now - this._at > 30_000;
  }

  /** Ends a sample: its counters become the previous ones. */
  commit(now = performance.now()) {
    this._prev = this._next;
    this._next = new Map();
    this._at = now;
  }

  /** Bits per second of `bytes` under `key` since the previous sample (null: none). */
  _rate(key, s, bytes) {
    const prev = this._prev.get(key);
    this._next.set(key, { ...(this._next.get(key) ?? {}), bytes, t: s.timestamp });
    if (!prev || prev.bytes == null || s.timestamp <= prev.t) return null;
    return Math.max(0, Math.round(((bytes - prev.bytes) * 8 * 1000) / (s.timestamp - prev.t)));
  }

  /** The fraction of packets lost under `key` since the previous sample (null: none). */
  _loss(key, received, lost) {
    const prev = this._prev.get(key);
    this._next.set(key, { ...(this._next.get(key) ?? {}), received, lost });
    if (!prev || prev.received == null) return null;
    const dl = Math.max(0, lost - prev.lost);
    const dr = Math.max(0, received - prev.received);
    return dl + dr > 0 ? dl / (dl + dr) : 0;
  }

  /**
   * A published track's figures from its sender's report: the bitrate of all its
   * encodings, each encoding (simulcast layer) with its own, loss and RTT as the server's
   * receiver reports tell them (RTT from the ICE checks when there are none).
   */
  published(key, report) {
    const layers = [];
    const remote = new Map();
    report.forEach((s) => {
      if (s.type === 'remote-inbound-rtp') remote.set(s.localId, s);
    });
    let packetsSent = 0;
    let packetsLost = 0;
    let fractionLost = null;
    let rtt = null;
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      packetsSent += s.packetsSent ?? 0;
      const r = remote.get(s.id);
      if (r) {
        packetsLost += r.packetsLost ?? 0;
        if (typeof r.fractionLost === 'number') fractionLost = Math.max(fractionLost ?? 0, r.fractionLost);
        if (typeof r.roundTripTime === 'number') rtt = r.roundTripTime * 1000;
      }
      layers.push({
        rid: s.rid ?? null,
        active: s.active ?? true,
        bitrate: this._rate(`${key}/${s.rid ?? s.ssrc}`, s, s.bytesSent ?? 0),
        frameWidth: s.frameWidth ?? null,
        frameHeight: s.frameHeight ?? null,
        framesPerSecond: s.framesPerSecond ?? null,
        scalabilityMode: s.scalabilityMode ?? null,
        qualityLimitationReason: s.qualityLimitationReason ?? null,
      });
    });
    const bitrate = layers.some((l) => l.bitrate != null) ? layers.reduce((n, l) => n + (l.bitrate ?? 0), 0) : null;
    return {
      bitrate,
      packetsSent,
      packetsLost,
      fractionLost,
      rtt: round(rtt ?? candidateRtt(report)),
      layers: layers.sort((a, b) => (a.rid ?? '').localeCompare(b.rid ?? '')),
    };
  }

  /** A received track's figures from its receiver's report. */
  subscribed(key, report) {
    let inbound = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (!inbound || (s.packetsReceived ?? 0) > (inbound.packetsReceived ?? 0))) inbound = s;
    });
    if (!inbound) {
      return { bitrate: null, packetsReceived: 0, packetsLost: 0, fractionLost: null, jitter: null, rtt: round(candidateRtt(report)), framesDecoded: 0, frameWidth: null, frameHeight: null, framesPerSecond: null };
    }
    const received = inbound.packetsReceived ?? 0;
    const lost = inbound.packetsLost ?? 0;
    return {
      bitrate: this._rate(key, inbound, inbound.bytesReceived ?? 0),
      packetsReceived: received,
      packetsLost: lost,
      fractionLost: this._loss(key, received, lost),
      jitter: typeof inbound.jitter === 'number' ? inbound.jitter * 1000 : null,
      rtt: round(candidateRtt(report)),
      framesDecoded: inbound.framesDecoded ?? 0,
      frameWidth: inbound.frameWidth ?? null,
      frameHeight: inbound.frameHeight ?? null,
      framesPerSecond: inbound.framesPerSecond ?? null,
    };
  }
}
