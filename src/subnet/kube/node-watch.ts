/**
 * Every Node of the cluster, kept current without gaps: list (in pages,
 * one consistent snapshot), then watch from the list's resourceVersion with
 * bookmarks. A watch the server ends is resumed from the last version seen;
 * a broken one likewise after a backoff; a 410 Gone (that version is
 * compacted away) lists again. Each listing replaces the whole set, so the
 * consumer reconciles against it: nodes deleted while we were not watching
 * are noticed there.
 *
 * Watch events only update the map and mark the node dirty; the consumer
 * gets the dirty names in one batch on the next turn of the event loop.
 * Nothing waits on the consumer, so a burst of 5,000 updates never stalls
 * the stream (flannel's fixed 5,000-slot channel deadlocks there), and
 * several updates of one node become one.
 */
import type { Logger } from '../../log.js';
import { KubeApiError, type KubeClient, type WatchStream } from './client.js';
import type { NodeObject, SlimNode } from './node-lease.js';
import { decodeNodeList, decodeWatchEvent } from './node-proto.js';

/** Ask for protobuf (nodes decoded for our fields only, see node-proto.ts), JSON when the server has none. */
const ACCEPT_LIST = 'application/vnd.kubernetes.protobuf, application/json';

export interface NodeWatchHandlers {
  /** A full listing replaced the set (the first one, and every re-list). */
  onListed(nodes: ReadonlyMap<string, SlimNode>): void;
  /** These nodes changed or were deleted since the last call (look them up in `nodes`). */
  onChanged(names: Set<string>): void;
  /** The API server became unreachable (with why) or reachable again (null). */
  onTrouble(problem: string | null): void;
}

const PAGE = 100;
/** Server-side watch timeout, randomised as client-go does so daemons do not re-watch in step. */
const WATCH_SECONDS_MIN = 300;

export class NodeWatch {
  readonly nodes = new Map<string, SlimNode>();
  private rv = '';
  private stream: WatchStream | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private dirty = new Set<string>();
  private flushQueued = false;
  private delay: number;
  private troubled = false;
  private listed = false;
  private firstList: Promise<void>;
  private resolveFirst: () => void = () => {};

  constructor(
    private readonly client: KubeClient,
    private readonly slim: (o: NodeObject) => SlimNode | null,
    private readonly handlers: NodeWatchHandlers,
    private readonly log: Logger,
    private readonly backoff = { initial: 500, max: 10_000 },
    /** The annotations kept of each node: with it, lists and watches are asked for in protobuf. */
    private readonly protoAnnotations: ReadonlySet<string> | null = null,
  ) {
    this.delay = backoff.initial;
    this.firstList = new Promise((r) => (this.resolveFirst = r));
  }

  /** Starts listing; resolves once the first listing is in (retrying until then, or until stop). */
  start(): Promise<void> {
    void this.list();
    return this.firstList;
  }

  get synced(): boolean {
    return this.listed;
  }

  private trouble(err: Error, what: string): void {
    if (!this.troubled) this.log.warn(`${what}; keeping the nodes known and retrying`, { error: err.message });
    else this.log.debug(`${what}, still`, { error: err.message });
    this.troubled = true;
    this.handlers.onTrouble(err.message);
  }

  private healthy(): void {
    if (this.troubled) this.log.info('API server reachable again', { nodes: this.nodes.size });
    this.troubled = false;
    this.delay = this.backoff.initial;
    this.handlers.onTrouble(null);
  }

  private retry(fn: () => void): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      fn();
    }, this.delay);
    this.delay = Math.min(this.delay * 2, this.backoff.max);
  }

  private async list(): Promise<void> {
    if (this.stopped) return;
    try {
      const fresh = new Map<string, SlimNode>();
      let cont = '';
      let rv = '';
      do {
        const q = `limit=${PAGE}${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`;
        const page = await this.listPage(`/api/v1/nodes?${q}`);
        for (const item of page.items) {
          const n = this.slim(item);
          if (n) fresh.set(n.name, n);
        }
        rv = page.resourceVersion || rv;
        cont = page.continue;
        if (this.stopped) return;
      } while (cont);
      this.nodes.clear();
      for (const [k, v] of fresh) this.nodes.set(k, v);
      this.rv = rv;
      // Whatever was dirty is now covered by the listing.
      this.dirty.clear();
      this.healthy();
      this.listed = true;
      this.handlers.onListed(this.nodes);
      this.resolveFirst();
      this.watch();
    } catch (err) {
      // 410 on a continue token: the snapshot expired mid-listing; start over.
      this.trouble(err as Error, 'cannot list nodes');
      this.retry(() => void this.list());
    }
  }

  private async listPage(path: string): Promise<{ resourceVersion: string; continue: string; items: NodeObject[] }> {
    if (this.protoAnnotations) {
      const reply = await this.client.raw('GET', path, { accept: ACCEPT_LIST });
      if (reply.contentType.includes('protobuf')) {
        try {
          return decodeNodeList(reply.body, this.protoAnnotations);
        } catch (err) {
          throw new KubeApiError(200, 'BadReply', `GET ${path}: ${(err as Error).message}`);
        }
      }
      return jsonPage(reply.body, path);
    }
    return jsonPage((await this.client.raw('GET', path)).body, path);
  }

  private watch(): void {
    if (this.stopped) return;
    const seconds = WATCH_SECONDS_MIN + Math.floor(Math.random() * WATCH_SECONDS_MIN);
    const path = `/api/v1/nodes?watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(this.rv)}&timeoutSeconds=${seconds}`;
    let gone = false;
    this.stream = this.client.watch(
      path,
      {
        onOpen: () => this.healthy(),
        onEvent: (ev) => {
          if (ev.type === 'ERROR') {
            const code = Number((ev.object as { code?: number }).code);
            if (code === 410) gone = true;
            this.log.debug('watch error event', { code, reason: (ev.object as { reason?: string }).reason });
            this.stream?.abort();
            this.stream = null;
            this.afterWatch(gone ? new KubeApiError(410, 'Expired', 'resource version too old') : new Error(`watch error ${code}`), gone);
            return;
          }
          const obj = ev.object as NodeObject;
          const rv = obj.metadata?.resourceVersion;
          if (rv) this.rv = rv;
          if (ev.type === 'BOOKMARK') return;
          const n = this.slim(obj);
          if (!n) return;
          if (ev.type === 'DELETED') this.nodes.delete(n.name);
          else if (ev.type === 'ADDED' || ev.type === 'MODIFIED') this.nodes.set(n.name, n);
          else return;
          this.markDirty(n.name);
        },
        onEnd: (err) => {
          if (this.stream === null) return;
          this.stream = null;
          this.afterWatch(err, err instanceof KubeApiError && err.status === 410);
        },
      },
      (seconds + 60) * 1000,
      this.protoAnnotations ? (frame) => decodeWatchEvent(frame, this.protoAnnotations!) as unknown as { type: string; object: Record<string, unknown> } : undefined,
    );
  }

  private afterWatch(err: Error | undefined, gone: boolean): void {
    if (this.stopped) return;
    if (gone) {
      this.log.info('watch resource version expired, listing nodes again');
      void this.list();
      return;
    }
    if (!err) {
      // The server's timeout: resume at once from the last version seen.
      this.watch();
      return;
    }
    this.trouble(err, 'lost the node watch');
    this.retry(() => this.watch());
  }

  private markDirty(name: string): void {
    this.dirty.add(name);
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      if (this.stopped || this.dirty.size === 0) return;
      const names = this.dirty;
      this.dirty = new Set();
      this.handlers.onChanged(names);
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.stream?.abort();
    this.stream = null;
    this.resolveFirst();
  }
}

function jsonPage(body: Buffer, path: string): { resourceVersion: string; continue: string; items: NodeObject[] } {
  let page: { metadata?: { resourceVersion?: string; continue?: string }; items?: NodeObject[] };
  try {
    page = JSON.parse(body.toString('utf8')) as typeof page;
  } catch {
    throw new KubeApiError(200, 'BadReply', `GET ${path}: reply is not JSON`);
  }
  return { resourceVersion: page.metadata?.resourceVersion ?? '', continue: page.metadata?.continue ?? '', items: page.items ?? [] };
}
