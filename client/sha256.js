// An incremental SHA-256 (FIPS 180-4): bytes go in piece by piece, the digest comes out at
// the end, so a file can be hashed while it streams without holding it whole. WebCrypto's
// `crypto.subtle.digest` only hashes one buffer at once; this module exists for that gap.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const INITIAL = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** SHA-256 of a sequence of byte pieces: `update(bytes)` any number of times, then `digest()`. */
export class Sha256 {
  constructor() {
    this._h = new Uint32Array(INITIAL);
    this._w = new Uint32Array(64);
    /** The bytes of a block not complete yet. */
    this._block = new Uint8Array(64);
    this._blockLen = 0;
    /** Bytes hashed so far (a Number: exact up to 2^53). */
    this.length = 0;
    this._done = false;
  }

  /**
   * Adds bytes. Returns this.
   * @param {ArrayBuffer | ArrayBufferView} data
   */
  update(data) {
    if (this._done) throw new Error('sha256: update after digest');
    const bytes = data instanceof Uint8Array ? data : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    let at = 0;
    this.length += bytes.byteLength;
    if (this._blockLen > 0) {
      const take = Math.min(64 - this._blockLen, bytes.byteLength);
      this._block.set(bytes.subarray(0, take), this._blockLen);
      this._blockLen += take;
      at = take;
      if (this._blockLen < 64) return this;
      this._compress(this._block, 0);
      this._blockLen = 0;
    }
    for (; at + 64 <= bytes.byteLength; at += 64) this._compress(bytes, at);
    if (at < bytes.byteLength) {
      this._block.set(bytes.subarray(at), 0);
      this._blockLen = bytes.byteLength - at;
    }
    return this;
  }

  /** The 32-byte digest; the hash cannot be updated afterwards. */
  digest() {
    if (this._done) throw new Error('sha256: digest taken twice');
    const bits = this.length * 8;
    // Padding: 0x80, zeros up to 56 mod 64, then the length in bits (64-bit big-endian).
    const pad = new Uint8Array((this._blockLen < 56 ? 56 : 120) - this._blockLen + 8);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    view.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    view.setUint32(pad.length - 4, bits >>> 0);
    const length = this.length;
    this.update(pad);
    this.length = length;
    this._done = true;
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) outView.setUint32(i * 4, this._h[i]);
    return out;
  }

  /** Hashes 64 bytes of `b` from `at`. */
  _compress(b, at) {
    const w = this._w;
    for (let i = 0; i < 16; i++, at += 4) w[i] = (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    const h = this._h;
    let a = h[0] | 0;
    let bb = h[1] | 0;
    let c = h[2] | 0;
    let d = h[3] | 0;
    let e = h[4] | 0;
    let f = h[5] | 0;
    let g = h[6] | 0;
    let hh = h[7] | 0;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
}

/** Lower-case hex of bytes (a digest as people read it). */
export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
