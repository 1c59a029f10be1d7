// End-to-end encryption of the share page's relayed transfers: the link's fragment holds a
// key (never sent to the server); each transfer derives its own AES-GCM key from it (HKDF
// with a random salt sent in the offer) and seals the file in blocks of 64 KiB, each with a
// nonce of its own (kind · block index), then a trailer holding the plaintext's size and
// SHA-256, so the receiver checks the hash of what it decrypted, not only of what travelled.

import { Sha256 } from '/sdk/sfumato.js';

export const SCHEME = 'aes-gcm-1';
/** Plaintext bytes per sealed block. */
export const BLOCK = 65536;
const TAG = 16;
/** The trailer: the plaintext's SHA-256 (32 bytes) and size (8 bytes, big-endian). */
const TRAILER = 40;
const KIND_DATA = 0;
const KIND_TRAILER = 1;
const KIND_NAME = 2;

const utf8 = new TextEncoder();

export function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function unb64url(text) {
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');

/** A new link key: 32 random bytes, base64url. */
export function newKey() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The link key (any text of the fragment) as HKDF input; null without WebCrypto. */
export async function importLinkKey(text) {
  if (!globalThis.crypto?.subtle || !text) return null;
  return crypto.subtle.importKey('raw', utf8.encode(text), 'HKDF', false, ['deriveKey']);
}

function transferKey(linkKey, salt) {
  return crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt, info: utf8.encode('sfumato-share v1') },
    linkKey,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

function nonce(kind, index) {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setUint32(0, kind);
  v.setBigUint64(4, BigInt(index));
  return n;
}

const blocksOf = (size) => Math.ceil(size / BLOCK);

/** Bytes on the wire for a plaintext of `size` bytes. */
export function sealedSize(size) {
  return size + blocksOf(size) * TAG + TRAILER + TAG;
}

/**
 * Prepares the sealing of `file` (a Blob): returns `{attributes, size, pump(writable)}`.
 * `attributes` go in the offer (scheme, salt, the sealed name, the plaintext size); `pump`
 * writes the sealed bytes into a byte stream's writable, closes it and resolves with the
 * plaintext's SHA-256 (hex).
 */
export async function sealer(linkKey, file, name) {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await transferKey(linkKey, salt);
  const sealedName = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(KIND_NAME, 0) }, key, utf8.encode(name)));
  const size = file.size;
  return {
    attributes: { enc: SCHEME, salt: b64url(salt), ename: b64url(sealedName), psize: String(size) },
    size: sealedSize(size),
    async pump(writable, signal) {
      const w = writable.getWriter();
      const hash = new Sha256();
      try {
        for (let i = 0; i < blocksOf(size); i++) {
          if (signal?.aborted) throw signal.reason;
          const plain = new Uint8Array(await file.slice(i * BLOCK, Math.min(size, (i + 1) * BLOCK)).arrayBuffer());
          hash.update(plain);
          await w.write(new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(KIND_DATA, i) }, key, plain)));
        }
        const digest = hash.digest();
        const trailer = new Uint8Array(TRAILER);
        trailer.set(digest, 0);
        new DataView(trailer.buffer).setBigUint64(32, BigInt(size));
        await w.write(new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(KIND_TRAILER, 0) }, key, trailer)));
        await w.close();
        return hex(digest);
      } catch (err) {
        w.abort(err).catch(() => {});
        throw err;
      }
    },
  };
}

/** Whether an offer's attributes say the stream is sealed. */
export const isSealed = (attributes) => attributes?.enc !== undefined;

/**
 * Opens a sealed stream offered with `attributes` and `wireSize` bytes: returns `{name,
 * size, sink(inner)}` where `sink` wraps `inner` (a WritableStream or `{write, close, abort}`)
 * into a sink for the stream that writes the plaintext there and throws on anything that
 * does not decrypt or does not match its trailer; `sha256` (hex) is set once it matched.
 * Throws for attributes that do not describe a stream sealed with this key.
 */
export async function opener(linkKey, attributes, wireSize) {
  if (attributes.enc !== SCHEME) throw new Error(`unknown encryption scheme ${String(attributes.enc).slice(0, 40)}`);
  const size = Number(attributes.psize);
  if (!Number.isSafeInteger(size) || size < 0 || sealedSize(size) !== wireSize) throw new Error('the sealed size does not match the stream');
  let salt;
  let sealedName;
  try {
    salt = unb64url(String(attributes.salt));
    sealedName = unb64url(String(attributes.ename ?? ''));
  } catch {
    throw new Error('malformed encryption attributes');
  }
  if (salt.byteLength !== 16) throw new Error('malformed encryption attributes');
  const key = await transferKey(linkKey, salt);
  let name;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(KIND_NAME, 0) }, key, sealedName));
  } catch {
    throw new Error('the name does not decrypt with this link’s key');
  }
  const result = { name, size, sha256: null };
  result.sink = (inner) => {
    const out = typeof inner.getWriter === 'function' ? inner.getWriter() : inner;
    const hash = new Sha256();
    const blocks = blocksOf(size);
    let index = 0; // the next block (blocks: the trailer)
    let parts = [];
    let buffered = 0;
    const need = () => (index < blocks ? Math.min(BLOCK, size - index * BLOCK) + TAG : index === blocks ? TRAILER + TAG : Infinity);
    const take = (n) => {
      const block = new Uint8Array(n);
      let at = 0;
      while (at < n) {
        const p = parts[0];
        const k = Math.min(p.byteLength, n - at);
        block.set(p.subarray(0, k), at);
        at += k;
        if (k === p.byteLength) parts.shift();
        else parts[0] = p.subarray(k);
      }
      buffered -= n;
      return block;
    };
    const open = async (kind, i, block) => {
      try {
        return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(kind, i) }, key, block));
      } catch {
        throw new Error(`block ${i} does not decrypt: not this link’s key, or altered`);
      }
    };
    return {
      async write(chunk) {
        parts.push(chunk);
        buffered += chunk.byteLength;
        while (buffered >= need()) {
          const block = take(need());
          if (index < blocks) {
            const plain = await open(KIND_DATA, index, block);
            hash.update(plain);
            await out.write(plain);
          } else {
            const t = await open(KIND_TRAILER, 0, block);
            const got = hex(hash.digest());
            const want = hex(t.subarray(0, 32));
            if (got !== want || Number(new DataView(t.buffer).getBigUint64(32)) !== size) {
              throw new Error(`the decrypted file has SHA-256 ${got}, the sender's has ${want}`);
            }
            result.sha256 = got;
          }
          index++;
        }
      },
      async close() {
        if (result.sha256 === null) throw new Error('the stream ended before its trailer');
        await out.close?.();
      },
      async abort(reason) {
        parts = [];
        await out.abort?.(reason);
      },
    };
  };
  return result;
}
