/**
 * Small HTTP servers on loopback for the fake clouds: one handler, the
 * whole request body read, a close() that drops keep-alive connections so a
 * test can take a service "down" and bring it back on the same port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface FakeRequest {
  method: string;
  url: URL;
  headers: IncomingMessage['headers'];
  body: string;
  remoteAddress: string;
}

export interface FakeReply {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

export type FakeHandler = (req: FakeRequest) => FakeReply | Promise<FakeReply>;

export class FakeHttpServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(
    private readonly handler: FakeHandler,
    private readonly host = '127.0.0.1',
  ) {}

  get url(): string {
    return `http://${this.host}:${this.port}`;
  }

  async listen(port = this.port): Promise<void> {
    const server = createServer((req, res) => void this.serve(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => resolve());
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const request: FakeRequest = {
      method: req.method ?? 'GET',
      url: new URL(req.url ?? '/', 'http://fake'),
      headers: req.headers,
      body: Buffer.concat(chunks).toString(),
      remoteAddress: req.socket.remoteAddress ?? '',
    };
    let reply: FakeReply;
    try {
      reply = await this.handler(request);
    } catch (err) {
      reply = { status: 500, body: `fake server error: ${(err as Error).message}` };
    }
    res.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers });
    res.end(reply.body);
  }
}

/** Failures a test asks a fake API to answer with, by action, for the next `times` calls. */
export interface InjectedFault {
  action: string;
  code: string;
  status: number;
  times: number;
  message?: string;
}

export class FaultPlan {
  private readonly faults: InjectedFault[] = [];

  add(fault: Omit<InjectedFault, 'times'> & { times?: number }): void {
    this.faults.push({ times: 1, ...fault });
  }

  /** The fault for this call of action, if one is due (each counts down once). */
  take(action: string): InjectedFault | null {
    const f = this.faults.find((x) => (x.action === action || x.action === '*') && x.times > 0);
    if (!f) return null;
    f.times--;
    return f;
  }

  clear(): void {
    this.faults.length = 0;
  }
}

/** One instance's metadata service: a server of its own per instance (each answers only for itself), paths recorded. */
export abstract class FakeMetadataServer {
  readonly paths: string[] = [];
  private readonly server = new FakeHttpServer((r) => {
    this.paths.push(this.recordAs(r));
    return this.answer(r);
  });

  get endpoint(): string {
    return this.server.url;
  }

  listen(): Promise<void> {
    return this.server.listen();
  }

  close(): Promise<void> {
    return this.server.close();
  }

  protected recordAs(req: FakeRequest): string {
    return req.url.pathname;
  }

  protected abstract answer(req: FakeRequest): FakeReply;
}
