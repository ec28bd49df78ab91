/**
 * A VICI client over charon's Unix socket: one request at a time per
 * connection (the protocol answers in order), commands whose results come
 * as events (list-sas, list-conns) collected between registering for the
 * event and the command's response.
 *
 * Errors: a command charon does not know, a reply saying success=no (with
 * charon's errmsg), a connection that drops or does not answer in time, and
 * a malformed reply are all ViciErrors; the connection is unusable after
 * the last two.
 */
import { connect, type Socket } from 'node:net';
import { encodePacket, PacketReader, PacketType, ViciError, type Packet, type ViciMessage } from './codec.js';

/** charon answered success=no; `errmsg` is charon's own words. */
export class ViciCommandError extends ViciError {
  constructor(
    readonly command: string,
    readonly errmsg: string,
  ) {
    super(`charon refused ${command}: ${errmsg}`);
    this.name = 'ViciCommandError';
  }
}

interface Waiter {
  resolve(p: Packet): void;
  reject(e: Error): void;
}

export class ViciClient {
  private readonly reader = new PacketReader();
  private waiter: Waiter | null = null;
  private events: { name: string; sink: (m: ViciMessage) => void } | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private broken: Error | null = null;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (e) => this.fail(new ViciError(`VICI socket error: ${e.message}`)));
    socket.on('close', () => this.fail(new ViciError('VICI connection closed by charon')));
  }

  /** Connect to charon's socket (e.g. /run/flannel/charon.vici). */
  static connect(path: string, timeoutMs = 10_000): Promise<ViciClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      const t = setTimeout(() => {
        s.destroy();
        reject(new ViciError(`VICI socket ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        s.removeAllListeners('error');
        resolve(new ViciClient(s, timeoutMs));
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(new ViciError(`VICI socket ${path}: ${e.code ?? e.message}`));
      });
    });
  }

  /** Run one command; resolves with its response message (success=no rejects with ViciCommandError). */
  request(command: string, message: ViciMessage = {}): Promise<ViciMessage> {
    return this.serialized(async () => checkSuccess(command, await this.exchange(command, message)));
  }

  /** Run a command that streams its results as `event` packets; resolves with them and the final response. */
  streamed(command: string, event: string, message: ViciMessage = {}): Promise<{ events: ViciMessage[]; response: ViciMessage }> {
    return this.serialized(async () => {
      await this.register(PacketType.EventRegister, event);
      const events: ViciMessage[] = [];
      this.events = { name: event, sink: (m) => events.push(m) };
      let response: ViciMessage;
      try {
        response = checkSuccess(command, await this.exchange(command, message));
      } catch (err) {
        // The command's own failure is the one to report, not a failed unregister after it.
        this.events = null;
        await this.register(PacketType.EventUnregister, event).catch(() => undefined);
        throw err;
      }
      this.events = null;
      await this.register(PacketType.EventUnregister, event);
      return { events, response };
    });
  }

  close(): void {
    this.broken ??= new ViciError('VICI connection closed');
    this.socket.destroy();
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async exchange(command: string, message: ViciMessage): Promise<ViciMessage> {
    const reply = await this.send({ type: PacketType.CmdRequest, name: command, message }, command);
    if (reply.type === PacketType.CmdUnknown) throw new ViciError(`charon does not know the VICI command ${command}`);
    if (reply.type !== PacketType.CmdResponse) throw new ViciError(`unexpected VICI packet type ${reply.type} in reply to ${command}`);
    return reply.message;
  }

  private async register(type: PacketType.EventRegister | PacketType.EventUnregister, event: string): Promise<void> {
    const reply = await this.send({ type, name: event, message: {} }, `event ${event}`);
    if (reply.type === PacketType.EventUnknown) throw new ViciError(`charon does not know the VICI event ${event}`);
    if (reply.type !== PacketType.EventConfirm) throw new ViciError(`unexpected VICI packet type ${reply.type} for event ${event}`);
  }

  private send(p: Packet, what: string): Promise<Packet> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => this.fail(new ViciError(`charon did not answer ${what} within ${this.timeoutMs} ms`)), this.timeoutMs);
      this.waiter = {
        resolve: (r) => (clearTimeout(t), resolve(r)),
        reject: (e) => (clearTimeout(t), reject(e)),
      };
      this.socket.write(encodePacket(p));
    });
  }

  private onData(chunk: Buffer): void {
    let packets: Packet[];
    try {
      packets = this.reader.push(chunk);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    for (const p of packets) {
      if (p.type === PacketType.Event) {
        if (this.events && p.name === this.events.name) this.events.sink(p.message);
        continue;
      }
      const w = this.waiter;
      this.waiter = null;
      if (w) w.resolve(p);
    }
  }

  private fail(e: Error): void {
    if (!this.broken) this.broken = e;
    this.socket.destroy();
    const w = this.waiter;
    this.waiter = null;
    if (w) w.reject(this.broken);
  }
}

function checkSuccess(command: string, m: ViciMessage): ViciMessage {
  if (m.success === 'no') throw new ViciCommandError(command, typeof m.errmsg === 'string' ? m.errmsg : 'no reason given');
  return m;
}
