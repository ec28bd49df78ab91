/**
 * The small key-value contract the subnet manager needs from a store.
 *
 * It mirrors the subset of etcd v3 that flannel uses: revisioned keys,
 * create-if-absent transactions, per-key TTLs (etcd leases) and a watch that
 * can start at a given revision. Both the etcd store and the embedded local
 * store implement it, so the lease logic above it is written once.
 */

export interface KvEntry {
  key: string;
  value: string;
  /** Store revision at which this key was last modified. */
  modRevision: number;
  /** Store revision at which this key was created (first writer wins a conflict between leases). */
  createRevision: number;
  /** The key has a TTL (is attached to an etcd lease). */
  expires: boolean;
  /**
   * Absolute expiry time in ms since epoch when the store knows it: always
   * from get(); etcd listings and watch events leave it out unless already
   * known, because finding it costs one round trip per etcd lease, and
   * nothing needs other hosts' expiry times.
   */
  expiresAt?: number;
}

export type KvEvent =
  | { type: 'put'; key: string; value: string; revision: number; createRevision: number; expires: boolean; expiresAt?: number }
  | { type: 'delete'; key: string; revision: number };

export interface KvListResult {
  entries: KvEntry[];
  /** The store revision the listing reflects; watch from revision + 1 to miss nothing. */
  revision: number;
}

export interface KvWatcher {
  close(): Promise<void>;
}

export interface KvWatchHandlers {
  onEvents(events: KvEvent[]): void;
  /**
   * Called when the watch broke (store unreachable, compacted revision...).
   * The watcher is dead afterwards; the caller re-lists and watches again.
   */
  onError(err: Error): void;
}

/** Thrown by stores when the backing service cannot be reached. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export interface KvStore {
  /** Human readable description for logs, without credentials. */
  readonly description: string;
  get(key: string): Promise<KvEntry | null>;
  list(prefix: string): Promise<KvListResult>;
  /**
   * Create key only if it does not exist. Returns the revision of the write
   * (the key's modRevision and createRevision), or null when it exists.
   */
  create(key: string, value: string, ttlSeconds?: number): Promise<number | null>;
  /**
   * Overwrite key with a fresh TTL, only if its modRevision still equals
   * expectedModRevision (when given; an absent key compares as 0). Returns
   * the revision of the write, or null on a lost compare.
   */
  update(key: string, value: string, ttlSeconds: number | undefined, expectedModRevision?: number): Promise<number | null>;
  /** Unconditional put without TTL (used for the network config). */
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Watch every key under prefix, delivering events with revision >= fromRevision, in order. */
  watch(prefix: string, fromRevision: number, handlers: KvWatchHandlers): Promise<KvWatcher>;
  close(): Promise<void>;
}
