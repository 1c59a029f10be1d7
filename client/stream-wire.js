// The byte-stream protocol's messages (docs/protocol.md, "Byte streams"): encoding them, and
// decoding and checking what a peer sent, which is untrusted. A malformed message throws a
// WireError, which the stream engine (streams.js) logs and drops.
//
//   message = kind u8 · stream id (16 random bytes) · body
//   chunk:    body = offset (float64, big-endian, a whole number) · bytes
//   others:   body = a UTF-8 JSON object (at most 8 KiB), fields below

export const KIND = Object.freeze({
  OFFER: 1, // {v, size, name, mime, topic, attributes, chunk, range, secret}
  ACCEPT: 2, // {received, credit}
  REJECT: 3, // {reason}
  CHUNK: 4, // binary: offset · bytes
  RANGE: 5, // {index, sha256}: the hash of range `index` (bytes index·range … +range)
  END: 6, // {size, sha256}: every byte is sent; the whole stream's hash
  ACK: 7, // {received, credit, upto?}
  PROBE: 8, // {sent}
  DONE: 9, // {ok, sha256?, reason?}: the receiver's verdict
  CANCEL: 10, // {reason}
  RESUME: 11, // {role, proof, received?, credit?}
});

const NAMES = Object.fromEntries(Object.entries(KIND).map(([k, v]) => [v, k]));

export const PROTOCOL_VERSION = 1;
/** Stream ids are 16 random bytes. */
export const ID_BYTES = 16;
/** Bytes of a message before a chunk's data. */
export const CHUNK_HEADER = 1 + ID_BYTES + 8;
/** The largest JSON body read. */
const MAX_JSON = 8192;
/** The largest stream a receiver considers (2^50 bytes, 1 PiB): offsets stay exact. */
export const MAX_SIZE = 2 ** 50;
/** Text fields' limits, in characters. */
const MAX_NAME = 1024;
const MAX_SHORT = 255;
const MAX_REASON = 512;

/** A message that breaks the protocol. */
export class WireError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WireError';
  }
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function randomId() {
  return crypto.getRandomValues(new Uint8Array(ID_BYTES));
}

/** A stream id as the hex string streams are keyed by. */
export function idHex(id) {
  let s = '';
  for (const b of id) s += b.toString(16).padStart(2, '0');
  return s;
}

function idBytes(hex) {
  const out = new Uint8Array(ID_BYTES);
  for (let i = 0; i < ID_BYTES; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A control message (every kind but CHUNK). */
export function encodeControl(kind, id, body) {
  const json = utf8.encode(JSON.stringify(body));
  const out = new Uint8Array(1 + ID_BYTES + json.byteLength);
  out[0] = kind;
  out.set(idBytes(id), 1);
  out.set(json, 1 + ID_BYTES);
  return out;
}

/** A chunk message: `bytes` (a Uint8Array) at `offset` of stream `id`. */
export function encodeChunk(id, offset, bytes) {
  const out = new Uint8Array(CHUNK_HEADER + bytes.byteLength);
  out[0] = KIND.CHUNK;
  out.set(idBytes(id), 1);
  new DataView(out.buffer).setFloat64(1 + ID_BYTES, offset);
  out.set(bytes, CHUNK_HEADER);
  return out;
}

// ------------------------------------------------------------------ checks

const isOffset = (v) => Number.isSafeInteger(v) && v >= 0 && v <= MAX_SIZE;
const isHash = (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isText = (v, max) => typeof v === 'string' && v.length <= max;

function need(ok, what) {
  if (!ok) throw new WireError(what);
}

/** Checks a control body of `kind`; returns the fields kept (unknown ones are dropped). */
function checkBody(kind, b) {
  need(b && typeof b === 'object' && !Array.isArray(b), 'the body is not a JSON object');
  switch (kind) {
    case KIND.OFFER: {
      need(b.v === PROTOCOL_VERSION, `protocol version ${JSON.stringify(b.v)} is not ${PROTOCOL_VERSION}`);
      need(isOffset(b.size), 'offer: size is not a whole number of bytes up to 2^50');
      need(isText(b.name, MAX_NAME) && isText(b.mime, MAX_SHORT) && isText(b.topic, MAX_SHORT), 'offer: name, mime or topic is not a string of the allowed length');
      need(Number.isSafeInteger(b.chunk) && b.chunk > 0, 'offer: chunk is not a positive whole number');
      need(Number.isSafeInteger(b.range) && b.range > 0 && b.range % b.chunk === 0, 'offer: range is not a multiple of chunk');
      need(typeof b.secret === 'string' && /^[0-9a-f]{32,128}$/.test(b.secret), 'offer: secret is not hex');
      const attributes = b.attributes ?? {};
      need(typeof attributes === 'object' && !Array.isArray(attributes) && Object.values(attributes).every((v) => typeof v === 'string'), 'offer: attributes are not strings by name');
      return { v: b.v, size: b.size, name: b.name, mime: b.mime, topic: b.topic, chunk: b.chunk, range: b.range, secret: b.secret, attributes: { ...attributes } };
    }
    case KIND.ACCEPT:
    case KIND.ACK: {
      need(isOffset(b.received) && isOffset(b.credit) && b.credit >= b.received, 'received and credit are not offsets with credit ≥ received');
      const out = { received: b.received, credit: b.credit };
      if (b.upto !== undefined) {
        need(isOffset(b.upto), 'upto is not an offset');
        out.upto = b.upto;
      }
      return out;
    }
    case KIND.REJECT:
    case KIND.CANCEL:
      return { reason: isText(b.reason, MAX_REASON) ? b.reason : '' };
    case KIND.RANGE:
      need(Number.isSafeInteger(b.index) && b.index >= 0 && isHash(b.sha256), 'range: index or sha256 malformed');
      return { index: b.index, sha256: b.sha256 };
    case KIND.END:
      need(isOffset(b.size) && isHash(b.sha256), 'end: size or sha256 malformed');
      return { size: b.size, sha256: b.sha256 };
    case KIND.PROBE:
      need(isOffset(b.sent), 'probe: sent is not an offset');
      return { sent: b.sent };
    case KIND.DONE:
      need(typeof b.ok === 'boolean', 'done: ok is not a boolean');
      return { ok: b.ok, sha256: isHash(b.sha256) ? b.sha256 : null, reason: isText(b.reason, MAX_REASON) ? b.reason : '' };
    case KIND.RESUME: {
      need((b.role === 'sender' || b.role === 'receiver') && isHash(b.proof), 'resume: role or proof malformed');
      const out = { role: b.role, proof: b.proof };
      if (b.role === 'receiver') {
        need(isOffset(b.received) && isOffset(b.credit) && b.credit >= b.received, 'resume: received and credit malformed');
        Object.assign(out, { received: b.received, credit: b.credit, accepted: b.accepted === true });
      }
      return out;
    }
    default:
      throw new WireError(`unknown message kind ${kind}`);
  }
}

/**
 * Reads a message: `{kind, name, id, ...body}`; a chunk is `{kind, name, id, offset, bytes}`
 * (`bytes` a view into `frame`). Throws a WireError for anything malformed.
 * @param {Uint8Array} frame
 */
export function decode(frame) {
  need(frame instanceof Uint8Array && frame.byteLength >= 1 + ID_BYTES, 'shorter than a header');
  const kind = frame[0];
  need(NAMES[kind] !== undefined, `unknown message kind ${kind}`);
  const id = idHex(frame.subarray(1, 1 + ID_BYTES));
  if (kind === KIND.CHUNK) {
    need(frame.byteLength >= CHUNK_HEADER, 'a chunk without its offset');
    const offset = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getFloat64(1 + ID_BYTES);
    need(isOffset(offset), 'chunk: the offset is not a whole number of bytes up to 2^50');
    return { kind, name: 'CHUNK', id, offset, bytes: frame.subarray(CHUNK_HEADER) };
  }
  const json = frame.subarray(1 + ID_BYTES);
  need(json.byteLength <= MAX_JSON, `a ${NAMES[kind]} body of ${json.byteLength} bytes, more than ${MAX_JSON}`);
  let body;
  try {
    body = JSON.parse(utf8Decoder.decode(json));
  } catch {
    throw new WireError(`${NAMES[kind]}: the body is not UTF-8 JSON`);
  }
  return { kind, name: NAMES[kind], id, ...checkBody(kind, body) };
}
