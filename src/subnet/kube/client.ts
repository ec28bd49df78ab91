/**
 * The few Kubernetes API calls flanneld makes, over Node's own https
 * client. flanneld needs five calls of core/v1 (get a pod, list and watch
 * nodes, get a node, patch a node's status) plus SelfSubjectAccessReview;
 * the official @kubernetes/client-node would add about fifteen packages
 * and decode every node into class instances, where the daemon keeps only
 * a few fields of each (see node-lease.ts slimNode and the closing note of
 * issue 25).
 *
 * The bearer token is re-read from its file at most every minute and at
 * once after a 401, so a rotated ServiceAccount token (bound tokens
 * rotate about hourly) is picked up without a restart, as client-go does.
 */
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest, type IncomingMessage, type ClientRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import type { KubeConnection } from './kube-config.js';
import { createLogger, type Logger } from '../../log.js';

/** The API server answered with an error status (a Status object's reason and message when it sent one). */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

/** The API server could not be reached or did not answer in time. */
export class KubeUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeUnreachableError';
  }
}

const REQUEST_TIMEOUT_MS = 30_000;
const TOKEN_REREAD_MS = 60_000;
/** A reply larger than this is refused (a 5,000-node list page of 500 nodes is a few MB). */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

export interface WatchHandlers {
  /** The server accepted the watch (status 200). */
  onOpen(): void;
  /** One decoded watch event ({type, object}). */
  onEvent(ev: { type: string; object: Record<string, unknown> }): void;
  /** The stream ended: err is undefined when the server closed it normally (its timeout). */
  onEnd(err?: Error): void;
}

export interface WatchStream {
  abort(): void;
}

export class KubeClient {
  private readonly agent: Agent | undefined;
  private token: string | undefined;
  private tokenReadAt = 0;
  private readonly secure: boolean;

  constructor(
    readonly conn: KubeConnection,
    private readonly log: Logger = createLogger('kube'),
  ) {
    this.secure = conn.server.startsWith('https:');
    this.agent = this.secure
      ? new Agent({
          keepAlive: true,
          ca: conn.ca,
          cert: conn.clientCert,
          key: conn.clientKey,
          rejectUnauthorized: !conn.insecureSkipTLSVerify,
          maxSockets: 8,
        })
      : undefined;
    this.token = conn.token;
  }

  private bearer(force = false): string | undefined {
    if (!this.conn.tokenFile) return this.token;
    const now = Date.now();
    if (force) this.log.info('the API server refused our token: reading it again from its file (rotated?)', { file: this.conn.tokenFile });
    if (force || this.token === undefined || now - this.tokenReadAt > TOKEN_REREAD_MS) {
      try {
        this.token = readFileSync(this.conn.tokenFile, 'utf8').trim();
        this.tokenReadAt = now;
      } catch {
        // Keep the last token; the request says 401 if it is no longer good.
      }
    }
    return this.token;
  }

  private open(method: string, path: string, headers: Record<string, string>, forceToken: boolean): ClientRequest {
    const url = new URL(this.conn.server + path);
    const token = this.bearer(forceToken);
    const opts: RequestOptions = {
      method,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (this.secure ? 443 : 80),
      path: url.pathname + url.search,
      headers: { accept: 'application/json', 'user-agent': 'flannel-ts', ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) },
      agent: this.agent,
    };
    return this.secure ? httpsRequest(opts) : httpRequest(opts);
  }

  /** One request, JSON in and out; a 401 re-reads the token file and tries once more. */
  async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const reply = await this.raw(method, path, { body, contentType });
    try {
      return JSON.parse(reply.body.toString('utf8')) as T;
    } catch {
      throw new KubeApiError(200, 'BadReply', `${method} ${path}: reply is not JSON`);
    }
  }

  /**
   * One request whose reply is returned as bytes with its content type
   * (`accept` may ask for protobuf); a 401 re-reads the token file and
   * tries once more.
   */
  async raw(method: string, path: string, o: { body?: unknown; contentType?: string; accept?: string } = {}): Promise<{ contentType: string; body: Buffer }> {
    try {
      return await this.once(method, path, o, false);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 401 && this.conn.tokenFile) return this.once(method, path, o, true);
      throw err;
    }
  }

  private once(method: string, path: string, o: { body?: unknown; contentType?: string; accept?: string }, forceToken: boolean): Promise<{ contentType: string; body: Buffer }> {
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
    const headers: Record<string, string> = payload ? { 'content-type': o.contentType ?? 'application/json', 'content-length': String(payload.length) } : {};
    if (o.accept) headers.accept = o.accept;
    return new Promise((resolve, reject) => {
      const req = this.open(method, path, headers, forceToken);
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new KubeUnreachableError(`${this.conn.server}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on('error', (err) => reject(err instanceof KubeUnreachableError || err instanceof KubeApiError ? err : new KubeUnreachableError(`${this.conn.server}: ${(err as Error).message}`)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY_BYTES) {
            req.destroy(new KubeUnreachableError(`${this.conn.server}: reply to ${method} ${path} over ${MAX_REPLY_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) return reject(apiError(status, body.toString('utf8'), method, path));
          resolve({ contentType: String(res.headers['content-type'] ?? ''), body });
        });
        res.on('error', (err) => reject(new KubeUnreachableError(`${this.conn.server}: ${err.message}`)));
      });
      req.end(payload);
    });
  }

  /**
   * A watch: newline-delimited JSON events until the server ends the
   * stream (its timeoutSeconds) or the connection breaks. Events are handed
   * over as they are decoded; nothing here waits for the handler.
   */
  watch(path: string, handlers: WatchHandlers, idleTimeoutMs: number, proto?: (frame: Buffer) => { type: string; object: Record<string, unknown> }): WatchStream {
    let ended = false;
    const end = (err?: Error) => {
      if (ended) return;
      ended = true;
      handlers.onEnd(err);
    };
    const start = (forceToken: boolean) => {
      const req = this.open('GET', path, proto ? { accept: 'application/vnd.kubernetes.protobuf;stream=watch, application/json' } : {}, forceToken);
      // No byte for this long (bookmarks come every minute or so): the connection is dead.
      req.setTimeout(idleTimeoutMs, () => req.destroy(new KubeUnreachableError(`${this.conn.server}: watch silent for ${idleTimeoutMs / 1000} s`)));
      req.on('error', (err) => end(err instanceof KubeUnreachableError ? err : new KubeUnreachableError(`${this.conn.server}: ${err.message}`)));
      req.on('response', (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            if (status === 401 && this.conn.tokenFile && !forceToken) {
              current = start(true);
              return;
            }
            end(apiError(status, Buffer.concat(chunks).toString('utf8'), 'WATCH', path));
          });
          return;
        }
        handlers.onOpen();
        if (proto && String(res.headers['content-type'] ?? '').includes('protobuf')) {
          readFrames(res, proto);
          return;
        }
        let rest = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (ended) return;
          rest += chunk;
          let nl: number;
          while ((nl = rest.indexOf('\n')) >= 0) {
            const line = rest.slice(0, nl);
            rest = rest.slice(nl + 1);
            if (!line.trim()) continue;
            let ev: { type: string; object: Record<string, unknown> };
            try {
              ev = JSON.parse(line) as typeof ev;
            } catch {
              req.destroy();
              end(new KubeApiError(200, 'BadReply', 'watch sent a line that is not JSON'));
              return;
            }
            handlers.onEvent(ev);
            if (ended) return;
          }
          if (rest.length > MAX_REPLY_BYTES) {
            req.destroy();
            end(new KubeApiError(200, 'BadReply', `watch event over ${MAX_REPLY_BYTES} bytes`));
          }
        });
        res.on('end', () => end());
        res.on('aborted', () => end(new KubeUnreachableError(`${this.conn.server}: watch connection closed`)));
        res.on('error', (err) => end(new KubeUnreachableError(`${this.conn.server}: ${err.message}`)));
      });
      req.end();
      return req;
    };
    /** Protobuf watch: each event is a 4-byte big-endian length and that many bytes. */
    const readFrames = (res: IncomingMessage, decode: (frame: Buffer) => { type: string; object: Record<string, unknown> }) => {
      let pending: Buffer = Buffer.alloc(0);
      res.on('data', (chunk: Buffer) => {
        if (ended) return;
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        while (pending.length >= 4) {
          const len = pending.readUInt32BE(0);
          if (len > MAX_REPLY_BYTES) {
            current.destroy();
            end(new KubeApiError(200, 'BadReply', `watch frame of ${len} bytes`));
            return;
          }
          if (pending.length < 4 + len) break;
          let ev: { type: string; object: Record<string, unknown> };
          try {
            ev = decode(pending.subarray(4, 4 + len));
          } catch (err) {
            current.destroy();
            end(new KubeApiError(200, 'BadReply', `watch sent a frame that does not decode: ${(err as Error).message}`));
            return;
          }
          pending = pending.subarray(4 + len);
          handlers.onEvent(ev);
          if (ended) return;
        }
      });
      res.on('end', () => end());
      res.on('aborted', () => end(new KubeUnreachableError(`${this.conn.server}: watch connection closed`)));
      res.on('error', (err) => end(new KubeUnreachableError(`${this.conn.server}: ${err.message}`)));
    };
    let current = start(false);
    return {
      abort: () => {
        ended = true;
        current.destroy();
      },
    };
  }

  close(): void {
    this.agent?.destroy();
  }
}

function apiError(status: number, text: string, method: string, path: string): KubeApiError {
  let reason = '';
  let message = '';
  try {
    const s = JSON.parse(text) as { reason?: string; message?: string };
    reason = typeof s.reason === 'string' ? s.reason : '';
    message = typeof s.message === 'string' ? s.message : '';
  } catch {
    // not a Status object
  }
  return new KubeApiError(status, reason || `HTTP${status}`, `${method} ${path}: ${status}${reason ? ` ${reason}` : ''}${message ? `: ${message.slice(0, 300)}` : ''}`);
}
