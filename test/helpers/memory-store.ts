/**
 * An in-memory KvStore for unit tests of the lease logic: same revision,
 * TTL and watch semantics as the real stores, plus a switch that makes it
 * "unreachable" to exercise outage handling.
 */
import { StoreUnavailableError, type KvEntry, type KvEvent, type KvStore, type KvWatchHandlers, type KvWatcher } from '../../src/subnet/kv.js';

interface Item {
  value: string;
  modRevision: number;
  createRevision: number;
  expiresAt?: number;
}

export class MemoryStore implements KvStore {
  readonly description = 'memory';
  revision = 1;
  down = false;
  private items = new Map<string, Item>();
  private history: KvEvent[] = [];
  private watchers = new Set<{ prefix: string; handlers: KvWatchHandlers }>();

  private check(): void {
    if (this.down) throw new StoreUnavailableError('memory store is down');
    const now = Date.now();
    for (const [k, it] of this.items) if (it.expiresAt !== undefined && it.expiresAt <= now) this.remove(k);
  }

  private remove(key: string): void {
    this.items.delete(key);
    this.publish({ type: 'delete', key, revision: ++this.revision });
  }

  private publish(ev: KvEvent): void {
    this.history.push(ev);
    for (const w of this.watchers) if (ev.key.startsWith(w.prefix)) w.handlers.onEvents([ev]);
  }

  private set(key: string, value: string, ttl?: number): void {
    const rev = ++this.revision;
    const expiresAt = ttl === undefined ? undefined : Date.now() + ttl * 1000;
    const createRevision = this.items.get(key)?.createRevision ?? rev;
    this.items.set(key, { value, modRevision: rev, createRevision, expiresAt });
    this.publish({ type: 'put', key, value, revision: rev, createRevision, expires: expiresAt !== undefined, expiresAt });
  }

  /** Simulate an outage: calls fail and every watch breaks. */
  setDown(down: boolean): void {
    this.down = down;
    if (down) {
      for (const w of this.watchers) w.handlers.onError(new StoreUnavailableError('memory store went down'));
      this.watchers.clear();
    }
  }

  async get(key: string): Promise<KvEntry | null> {
    this.check();
    const it = this.items.get(key);
    return it ? { key, ...it, expires: it.expiresAt !== undefined } : null;
  }
  async list(prefix: string) {
    this.check();
    const entries = [...this.items].filter(([k]) => k.startsWith(prefix)).map(([key, it]) => ({ key, ...it, expires: it.expiresAt !== undefined }));
    return { entries, revision: this.revision };
  }
  async create(key: string, value: string, ttl?: number): Promise<number | null> {
    this.check();
    if (this.items.has(key)) return null;
    this.set(key, value, ttl);
    return this.revision;
  }
  async update(key: string, value: string, ttl: number | undefined, expected?: number): Promise<number | null> {
    this.check();
    if (expected !== undefined && (this.items.get(key)?.modRevision ?? 0) !== expected) return null;
    this.set(key, value, ttl);
    return this.revision;
  }
  async put(key: string, value: string): Promise<void> {
    this.check();
    this.set(key, value);
  }
  async delete(key: string): Promise<void> {
    this.check();
    if (this.items.has(key)) this.remove(key);
  }
  async watch(prefix: string, fromRevision: number, handlers: KvWatchHandlers): Promise<KvWatcher> {
    this.check();
    const past = this.history.filter((e) => e.revision >= fromRevision && e.key.startsWith(prefix));
    if (past.length) handlers.onEvents(past);
    const w = { prefix, handlers };
    this.watchers.add(w);
    return { close: async () => void this.watchers.delete(w) };
  }
  /** Expire keys now (tests call it instead of waiting). */
  sweep(): void {
    this.check();
  }
  async close(): Promise<void> {
    this.watchers.clear();
  }
}
