// Where the share page writes a received file, so that it is never held whole in memory:
// a file the user picks (File System Access: showSaveFilePicker), else the origin private
// file system (OPFS; the page then links to the File it holds there, which is disk-backed),
// and only without either a Blob in memory. Each tab keeps its OPFS files in a directory of
// its own; directories left by tabs closed more than a day ago are removed at start.

const ROOT = 'sfumato-share';
const DAY = 24 * 3600 * 1000;
let tabDir = null;

/** A name safe for a file system entry: the last path segment, no odd characters. */
export function safeName(name) {
  const base = String(name).split(/[\\/]/).pop() || 'file';
  return base.replace(/[\u0000-\u001f<>:"|?*]/g, '_').slice(0, 180) || 'file';
}

export const canPickFile = () => typeof globalThis.showSaveFilePicker === 'function';

async function opfsRoot() {
  if (!navigator.storage?.getDirectory) return null;
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(ROOT, { create: true });
}

/** This tab's OPFS directory (created once); removes those of tabs gone for a day. */
async function tabDirectory() {
  if (tabDir) return tabDir;
  const root = await opfsRoot();
  if (!root) return null;
  const now = Date.now();
  for await (const [name, handle] of root.entries()) {
    const t = Number(/^t(\d+)-/.exec(name)?.[1]);
    if (handle.kind === 'directory' && Number.isFinite(t) && now - t > DAY) root.removeEntry(name, { recursive: true }).catch(() => {});
  }
  const name = `t${now}-${Math.random().toString(36).slice(2, 8)}`;
  tabDir = { name, handle: await root.getDirectoryHandle(name, { create: true }) };
  return tabDir;
}

let serial = 0;

/**
 * A target in OPFS: `{kind: 'opfs', sink, path, file(), remove()}`; null where OPFS or its
 * writable streams are missing.
 */
export async function opfsTarget(name) {
  try {
    const dir = await tabDirectory();
    if (!dir) return null;
    const fileName = `${++serial}-${safeName(name)}`;
    const handle = await dir.handle.getFileHandle(fileName, { create: true });
    if (typeof handle.createWritable !== 'function') return null;
    const sink = await handle.createWritable();
    return {
      kind: 'opfs',
      sink,
      path: `${ROOT}/${dir.name}/${fileName}`,
      file: () => handle.getFile(),
      remove: () => dir.handle.removeEntry(fileName).catch(() => {}),
    };
  } catch (err) {
    console.warn('share: OPFS is not usable here:', err);
    return null;
  }
}

/** A target the user picks (needs a click just before). Throws if the user cancels. */
export async function pickedTarget(name) {
  const handle = await globalThis.showSaveFilePicker({ suggestedName: safeName(name) });
  return { kind: 'picked', sink: await handle.createWritable(), path: handle.name, file: () => handle.getFile(), remove: () => {} };
}

/** The last resort: the bytes in memory, as a Blob at the end. */
export function memoryTarget() {
  let parts = [];
  return {
    kind: 'memory',
    sink: { write: (c) => void parts.push(c), close() {}, abort: () => void (parts = []) },
    path: null,
    file: async () => new Blob(parts),
    remove: () => void (parts = []),
  };
}

/** OPFS where it works, else memory. */
export async function defaultTarget(name) {
  return (await opfsTarget(name)) ?? memoryTarget();
}
