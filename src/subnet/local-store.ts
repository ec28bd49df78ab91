/**
 * LocalStore: the embedded KvStore for a single machine.
 *
 * Several flanneld daemons on one host (typically each in its own network
 * namespace, but sharing the filesystem) use the same directory as their
 * "etcd". The semantics mirror the etcd v3 subset in kv.ts: a store-wide
 * revision that increases by one per change, per-key modRevision and
 * createRevision, TTLs whose expiry produces delete events, create-if-absent
 * and compare-modRevision updates, and watches that resume from a revision.
 *
 * Design
 * ------
 * - One file, `state.json`, holds everything:
 *     { format, revision, keys: {key: {value, modRevision, createRevision, expiresAt?}},
 *       events: [...last maxEvents events...] }
 *   Keeping the event log inside the same file as the keys means a change
 *   and its event become visible atomically; a separate append log would
 *   need its own crash-consistency story for little gain at flannel's write
 *   rate (a few renewals per host per day, plus start-ups).
 * - Every change is a read-modify-write under a kernel lock: flock(LOCK_EX)
 *   on the file `lock` (taken through the native addon; Node has no flock).
 *   The kernel releases it when its holder exits or dies, whatever pid
 *   namespace the holder runs in, and never while the holder is alive,
 *   however long it stalls (a slow fsync): there is no stale-lock guessing
 *   and nobody ever breaks a lock. The lock file itself is never removed, so
 *   every process locks the same inode; a holder checks after locking that
 *   the path still names the inode it locked (someone deleting the file
 *   would otherwise let two holders lock two inodes). The critical section
 *   is synchronous, so two LocalStore instances inside one process cannot
 *   interleave either.
 * - The commit is conditional too: just before renaming its new state into
 *   place, a writer checks that state.json is still the file it read (same
 *   inode and size) and that it still holds the lock file's inode; if not,
 *   it publishes nothing and fails with StoreUnavailableError (the caller
 *   retries). So even a writer that somehow lost its lock cannot overwrite a
 *   newer state.
 * - Writes go to a unique temp file, are fsynced, renamed over state.json,
 *   then the directory is fsynced. A writer killed at any point (even with
 *   SIGKILL) leaves either the old or the new complete state.json; readers
 *   never take the lock because rename is atomic. Temp files are removed
 *   only under the lock, when no writer can still be using one.
 * - Expiry: any locked operation first deletes expired keys, each deletion
 *   recorded as a delete event with its own revision. Lock-free reads that
 *   notice an expired key run such a sweep before answering, and watchers
 *   run it when they see one, so expiry happens within a poll interval
 *   even when nobody writes.
 * - Watchers poll state.json (stat: inode/mtime/size, then re-read on change)
 *   every pollIntervalMs and deliver retained events with revision >= the
 *   next expected one, in order. If the requested revision is older than the
 *   retained log, onError fires (like an etcd compaction) and the caller
 *   re-lists.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '../log.js';
import { loadNative } from '../native/addon.js';
import {
  StoreUnavailableError,
  type KvEntry,
  type KvEvent,
  type KvListResult,
  type KvStore,
  type KvWatcher,
  type KvWatchHandlers,
} from './kv.js';

const log = createLogger('local-store');

export interface LocalStoreOptions {
  /** Directory holding state.json and the lock files; created if missing. */
  dir: string;
  /** How often watchers look for changes (default 100 ms). */
  pollIntervalMs?: number;
  /** Number of events retained for watchers resuming from a revision (default 1000). */
  maxEvents?: number;
  /** Give up acquiring the lock after this long (default 10 s). */
  lockTimeoutMs?: number;
}

interface StoredKey {
  value: string;
  modRevision: number;
  createRevision: number;
  expiresAt?: number;
}

interface State {
  format: 1;
  revision: number;
  keys: Record<string, StoredKey>;
  /** Contiguous: events[i].revision === events[0].revision + i. */
  events: KvEvent[];
}

const STATE_FILE = 'state.json';
const LOCK_FILE = 'lock';
const TMP_PREFIX = 'state.json.tmp.';
/** Watchers re-read state.json at least every this many polls, whatever stat says. */
const FORCED_REREAD_POLLS = 10;

function emptyState(): State {
  return { format: 1, revision: 0, keys: {}, events: [] };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A held lock: the open lock file (closing it releases the flock) and its inode. */
interface HeldLock {
  fd: number;
  ino: bigint;
}

/** Identity of state.json as read at the start of a critical section. */
interface StateIdentity {
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

function stateIdentity(p: string): StateIdentity | null {
  try {
    const st = fs.statSync(p, { bigint: true });
    return { ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
  } catch {
    return null;
  }
}

function sameIdentity(a: StateIdentity | null, b: StateIdentity | null): boolean {
  if (a === null || b === null) return a === b;
  return a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** Oldest revision still present in the event log, minus one. */
function compactedRevision(state: State): number {
  return state.events.length > 0 ? state.events[0]!.revision - 1 : state.revision;
}

function hasExpired(state: State, now: number): boolean {
  for (const k of Object.values(state.keys)) if (k.expiresAt !== undefined && k.expiresAt <= now) return true;
  return false;
}

export class LocalStore implements KvStore {
  readonly description: string;
  readonly dir: string;
  private readonly statePath: string;
  private readonly lockPath: string;
  private readonly pollIntervalMs: number;
  private readonly maxEvents: number;
  private readonly lockTimeoutMs: number;
  private readonly watchers = new Set<LocalWatcher>();
  private tmpCleaned = false;
  private closed = false;

  constructor(opts: LocalStoreOptions) {
    this.dir = path.resolve(opts.dir);
    this.description = `local ${this.dir}`;
    this.statePath = path.join(this.dir, STATE_FILE);
    this.lockPath = path.join(this.dir, LOCK_FILE);
    this.pollIntervalMs = opts.pollIntervalMs ?? 100;
    this.maxEvents = Math.max(1, opts.maxEvents ?? 1000);
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StoreUnavailableError(`${this.description}: cannot create store directory: ${(err as Error).message}`, { cause: err });
    }
  }

  // ---------------------------------------------------------------- reading

  /** Reads state.json without the lock (rename makes every version complete). */
  private readState(): State {
    let text: string;
    try {
      text = fs.readFileSync(this.statePath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw new StoreUnavailableError(`${this.description}: cannot read ${STATE_FILE}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: State;
    try {
      parsed = JSON.parse(text) as State;
    } catch (err) {
      // Cannot happen through this code (temp file + fsync + rename); someone
      // edited the file by hand or the disk lied. Refuse rather than reset.
      throw new StoreUnavailableError(`${this.description}: ${STATE_FILE} is corrupt: ${(err as Error).message}`, { cause: err });
    }
    if (parsed.format !== 1 || typeof parsed.revision !== 'number' || typeof parsed.keys !== 'object' || !Array.isArray(parsed.events)) {
      throw new StoreUnavailableError(`${this.description}: ${STATE_FILE} has an unknown format`);
    }
    return parsed;
  }

  /** Current state with no expired keys left (sweeping under the lock if needed). */
  private async readFresh(): Promise<State> {
    const state = this.readState();
    if (!hasExpired(state, Date.now())) return state;
    return this.withLock((s) => s);
  }

  // ---------------------------------------------------------------- locking

  /**
   * Runs fn(state) under the lock; fn mutates state via this.apply* helpers
   * and its return value is passed through. The state is written back only
   * when the revision moved.
   */
  private async withLock<T>(fn: (state: State) => T): Promise<T> {
    if (this.closed) throw new Error(`${this.description}: store is closed`);
    const lock = await this.acquireLock();
    try {
      this.cleanTmpFiles();
      const read = stateIdentity(this.statePath);
      const state = this.readState();
      const before = state.revision;
      this.sweepExpired(state, Date.now());
      const result = fn(state);
      if (state.revision !== before) this.writeState(state, lock, read);
      return result;
    } finally {
      fs.closeSync(lock.fd); // releases the flock
    }
  }

  private async acquireLock(): Promise<HeldLock> {
    const deadline = Date.now() + this.lockTimeoutMs;
    let delay = 1;
    for (;;) {
      const held = this.tryLock();
      if (held) return held;
      if (Date.now() > deadline) {
        throw new StoreUnavailableError(`${this.description}: timed out after ${this.lockTimeoutMs} ms waiting for the store lock (another process holds ${this.lockPath})`);
      }
      // Jittered, growing wait: the holder needs a few ms, don't spin.
      await sleep(delay + Math.random() * delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  /** One non-blocking attempt; null while another process holds the lock. */
  private tryLock(): HeldLock | null {
    let fd: number;
    try {
      fd = fs.openSync(this.lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    } catch (err) {
      throw new StoreUnavailableError(`${this.description}: cannot open lock file: ${(err as Error).message}`, { cause: err });
    }
    try {
      if (!loadNative().tryLockExclusive(fd)) {
        fs.closeSync(fd);
        return null;
      }
      // Locked the inode we opened; make sure the path still names it (see the design notes).
      const ino = fs.fstatSync(fd, { bigint: true }).ino;
      if (this.lockInode() !== ino) {
        fs.closeSync(fd);
        return null;
      }
      return { fd, ino };
    } catch (err) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(`${this.description}: cannot lock: ${(err as Error).message}`, { cause: err });
    }
  }

  private lockInode(): bigint | null {
    try {
      return fs.statSync(this.lockPath, { bigint: true }).ino;
    } catch {
      return null;
    }
  }

  /** Removes temp files left by writers that died before renaming (we hold the lock, so none is live). */
  private cleanTmpFiles(): void {
    if (this.tmpCleaned) return;
    this.tmpCleaned = true;
    try {
      for (const name of fs.readdirSync(this.dir)) {
        if (name.startsWith(TMP_PREFIX)) fs.rmSync(path.join(this.dir, name), { force: true });
      }
    } catch {
      /* best effort */
    }
  }

  private writeState(state: State, lock: HeldLock, read: StateIdentity | null): void {
    const tmp = path.join(this.dir, `${TMP_PREFIX}${process.pid}.${randomBytes(4).toString('hex')}`);
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.writeSync(fd, JSON.stringify(state));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      // The conditional commit: publish only on top of the very state we read, while we hold the lock's inode.
      if (this.lockInode() !== lock.ino || !sameIdentity(stateIdentity(this.statePath), read)) {
        throw new StoreUnavailableError(`${this.description}: ${STATE_FILE} changed under the lock; nothing written, retry`);
      }
      fs.renameSync(tmp, this.statePath);
      // Persist the rename itself.
      const dfd = fs.openSync(this.dir, 'r');
      try {
        fs.fsyncSync(dfd);
      } finally {
        fs.closeSync(dfd);
      }
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw new StoreUnavailableError(`${this.description}: cannot write ${STATE_FILE}: ${(err as Error).message}`, { cause: err });
    }
  }

  // --------------------------------------------------------------- mutation

  private record(state: State, ev: KvEvent): void {
    state.events.push(ev);
    if (state.events.length > this.maxEvents) state.events.splice(0, state.events.length - this.maxEvents);
  }

  private applyPut(state: State, key: string, value: string, ttlSeconds: number | undefined): void {
    const rev = ++state.revision;
    const prev = state.keys[key];
    const expiresAt = ttlSeconds !== undefined && ttlSeconds > 0 ? Date.now() + ttlSeconds * 1000 : undefined;
    const k: StoredKey = { value, modRevision: rev, createRevision: prev ? prev.createRevision : rev };
    if (expiresAt !== undefined) k.expiresAt = expiresAt;
    state.keys[key] = k;
    const ev: KvEvent = { type: 'put', key, value, revision: rev, createRevision: k.createRevision, expires: expiresAt !== undefined };
    if (expiresAt !== undefined) ev.expiresAt = expiresAt;
    this.record(state, ev);
  }

  private applyDelete(state: State, key: string): boolean {
    if (!(key in state.keys)) return false;
    const rev = ++state.revision;
    delete state.keys[key];
    this.record(state, { type: 'delete', key, revision: rev });
    return true;
  }

  private sweepExpired(state: State, now: number): void {
    // Oldest expiry first, so delete events come in expiry order.
    const expired = Object.entries(state.keys)
      .filter(([, k]) => k.expiresAt !== undefined && k.expiresAt <= now)
      .sort((a, b) => a[1].expiresAt! - b[1].expiresAt! || (a[0] < b[0] ? -1 : 1));
    for (const [key] of expired) this.applyDelete(state, key);
    if (expired.length > 0) log.debug('expired keys', { count: expired.length, dir: this.dir });
  }

  // ---------------------------------------------------------------- KvStore

  async get(key: string): Promise<KvEntry | null> {
    const state = await this.readFresh();
    const k = state.keys[key];
    return k ? toEntry(key, k) : null;
  }

  async list(prefix: string): Promise<KvListResult> {
    const state = await this.readFresh();
    const entries = Object.keys(state.keys)
      .filter((key) => key.startsWith(prefix))
      .sort()
      .map((key) => toEntry(key, state.keys[key]!));
    return { entries, revision: state.revision };
  }

  async create(key: string, value: string, ttlSeconds?: number): Promise<number | null> {
    return this.withLock((state) => {
      if (key in state.keys) return null;
      this.applyPut(state, key, value, ttlSeconds);
      return state.revision;
    });
  }

  async update(key: string, value: string, ttlSeconds: number | undefined, expectedModRevision?: number): Promise<number | null> {
    return this.withLock((state) => {
      // Like etcd, an absent key compares as modRevision 0.
      if (expectedModRevision !== undefined && (state.keys[key]?.modRevision ?? 0) !== expectedModRevision) return null;
      this.applyPut(state, key, value, ttlSeconds);
      return state.revision;
    });
  }

  async put(key: string, value: string): Promise<void> {
    await this.withLock((state) => this.applyPut(state, key, value, undefined));
  }

  async delete(key: string): Promise<void> {
    await this.withLock((state) => this.applyDelete(state, key));
  }

  /** Runs the expiry sweep now (watchers call this when they see an expired key). */
  async sweep(): Promise<void> {
    await this.withLock(() => undefined);
  }

  async watch(prefix: string, fromRevision: number, handlers: KvWatchHandlers): Promise<KvWatcher> {
    if (this.closed) throw new Error(`${this.description}: store is closed`);
    const state = this.readState();
    // etcd treats start revision 0 as "from now on".
    const next = fromRevision > 0 ? fromRevision : state.revision + 1;
    const w = new LocalWatcher(this, prefix, next, handlers, this.pollIntervalMs);
    this.watchers.add(w);
    w.start();
    return w;
  }

  /** @internal used by LocalWatcher */
  _readStateForWatch(): State {
    return this.readState();
  }

  /** @internal */
  _forget(w: LocalWatcher): void {
    this.watchers.delete(w);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.watchers].map((w) => w.close()));
  }
}

function toEntry(key: string, k: StoredKey): KvEntry {
  const e: KvEntry = { key, value: k.value, modRevision: k.modRevision, createRevision: k.createRevision, expires: k.expiresAt !== undefined };
  if (k.expiresAt !== undefined) e.expiresAt = k.expiresAt;
  return e;
}

class LocalWatcher implements KvWatcher {
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private lastStat = '';
  private sweeping = false;

  constructor(
    private readonly store: LocalStore,
    private readonly prefix: string,
    /** Next revision to deliver. */
    private next: number,
    private readonly handlers: KvWatchHandlers,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    // First delivery on the next tick, so watch() returns before any callback.
    this.timer = setTimeout(() => this.poll(), 0);
  }

  /**
   * Cheap change detector. Every write renames a new file into place, so
   * inode, ctime and mtime (nanoseconds) change; inode numbers can be reused
   * and coarse filesystems may repeat a timestamp, hence also the periodic
   * unconditional re-read below.
   */
  private statKey(): string {
    try {
      const st = fs.statSync(path.join(this.store.dir, STATE_FILE), { bigint: true });
      return `${st.ino}:${st.mtimeNs}:${st.ctimeNs}:${st.size}`;
    } catch {
      return 'missing';
    }
  }

  private pollsSinceRead = 0;

  private poll(): void {
    this.timer = null;
    if (this.closed) return;
    try {
      const sk = this.statKey();
      const reread = sk !== this.lastStat || ++this.pollsSinceRead >= FORCED_REREAD_POLLS;
      if (reread) {
        this.lastStat = sk;
        this.pollsSinceRead = 0;
        const state = this.store._readStateForWatch();
        if (!this.deliver(state)) return;
      }
      if (this.expiryDue) this.triggerSweep();
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.timer = setTimeout(() => this.poll(), this.intervalMs);
  }

  /** Earliest expiry seen in the last state read; lets unchanged-file polls notice expiry without re-reading. */
  private earliestExpiry = Infinity;

  private get expiryDue(): boolean {
    return this.earliestExpiry <= Date.now();
  }

  private triggerSweep(): void {
    if (this.sweeping) return;
    this.sweeping = true;
    this.store
      .sweep()
      .catch((err) => log.warn('expiry sweep failed', { dir: this.store.dir, error: err as Error }))
      .finally(() => {
        this.sweeping = false;
      });
  }

  /** Returns false when the watcher failed. */
  private deliver(state: State): boolean {
    this.earliestExpiry = Infinity;
    for (const k of Object.values(state.keys)) if (k.expiresAt !== undefined && k.expiresAt < this.earliestExpiry) this.earliestExpiry = k.expiresAt;
    if (this.next > state.revision) return true;
    if (this.next <= compactedRevision(state)) {
      this.fail(new Error(`${this.store.description}: revision ${this.next} is no longer retained (oldest retained ${compactedRevision(state) + 1}); re-list`));
      return false;
    }
    const first = state.events[0]!.revision;
    const events = state.events.slice(this.next - first).filter((e) => e.key.startsWith(this.prefix));
    this.next = state.revision + 1;
    if (events.length > 0) this.handlers.onEvents(events);
    return true;
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.store._forget(this);
    if (this.timer) clearTimeout(this.timer);
    this.handlers.onError(err);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.store._forget(this);
  }
}
