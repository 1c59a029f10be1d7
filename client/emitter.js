// A minimal event emitter: on/off/once/emit. Listener errors are reported, never propagated.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /** Registers `cb` for `event`; returns a function that removes it. */
  on(event, cb) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(cb);
    return () => this.off(event, cb);
  }

  off(event, cb) {
    const set = this._listeners.get(event);
    if (set) set.delete(cb);
  }

  once(event, cb) {
    const off = this.on(event, (...args) => {
      off();
      cb(...args);
    });
    return off;
  }

  emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const cb of [...set]) {
      try {
        cb(...args);
      } catch (err) {
        console.error(`sfumato: a '${event}' listener threw`, err);
      }
    }
  }
}
