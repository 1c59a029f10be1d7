// What a byte stream's sender reads from (streams.js): a Blob (a File), which it can read
// again at any offset, or a ReadableStream of bytes of a known size, read once in order and
// kept in memory only until the receiver has it (a rewind or a resume goes back at most
// that far). A source is `{size, read(start, end): Promise<Uint8Array>, release(offset)}`;
// `read` is asked for ranges, in order the first time, again after going back.

/** A Blob as a source. */
export function blobSource(blob) {
  return {
    size: blob.size,
    async read(start, end) {
      const bytes = new Uint8Array(await blob.slice(start, end).arrayBuffer());
      if (bytes.byteLength !== end - start) throw new Error(`the file changed while it was being read (${bytes.byteLength} bytes at ${start})`);
      return bytes;
    },
    release() {},
  };
}

/**
 * A ReadableStream of `size` bytes (Uint8Array, ArrayBuffer or any view chunks) as a source.
 * It fails if the stream ends early or holds more.
 */
export function readableSource(readable, size) {
  const reader = readable.getReader();
  /** Bytes read from the stream and not released yet, from offset `base`. */
  let parts = [];
  let base = 0;
  let buffered = 0;
  let ended = false;
  const pull = async () => {
    const { done, value } = await reader.read();
    if (done) {
      ended = true;
      return;
    }
    const bytes = value instanceof Uint8Array ? value : ArrayBuffer.isView(value) ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value instanceof ArrayBuffer ? new Uint8Array(value) : null;
    if (!bytes) throw new TypeError('the stream gave something other than bytes');
    if (base + buffered + bytes.byteLength > size) throw new Error(`the stream holds more than the ${size} bytes announced`);
    parts.push(bytes);
    buffered += bytes.byteLength;
  };
  return {
    size,
    async read(start, end) {
      if (start < base) throw new Error(`bytes at ${start} were released already`);
      while (base + buffered < end) {
        if (ended) throw new Error(`the stream ended at ${base + buffered} bytes, not ${size}`);
        await pull();
      }
      const out = new Uint8Array(end - start);
      let at = base;
      for (const p of parts) {
        const from = Math.max(start, at);
        const to = Math.min(end, at + p.byteLength);
        if (from < to) out.set(p.subarray(from - at, to - at), from - start);
        at += p.byteLength;
        if (at >= end) break;
      }
      if (end === size && !ended) {
        // The stream must end here.
        await pull();
        if (!ended) throw new Error(`the stream holds more than the ${size} bytes announced`);
      }
      return out;
    },
    /** The receiver has every byte before `offset`: they need not be kept. */
    release(offset) {
      while (parts.length && base + parts[0].byteLength <= offset) {
        base += parts[0].byteLength;
        buffered -= parts[0].byteLength;
        parts.shift();
      }
    },
    cancel(reason) {
      reader.cancel(reason).catch(() => {});
    },
  };
}
