/**
 * charon's stderr lines into our log, one line each, under the component
 * "charon": warnings for lines that report a failure, info for the rest.
 * It also recognises the one failure the backend must report in its own
 * words: an SA negotiated but refused by the kernel ("unable to install ...
 * IPsec SA"), with the kernel's reason taken from the netlink error the
 * same charon thread logged just before.
 */
import type { Logger } from '../../log.js';

export interface CharonLine {
  /** charon's thread number ("06"). */
  thread: string;
  /** Log group: IKE, KNL, CFG, ... */
  group: string;
  /** The IKE SA's connection name (ike_name = yes), when the line is about one. */
  connection: string | null;
  text: string;
}

/** `NN[GRP] <name|N> text` (ike_name = yes), `NN[GRP] <N> text` (an SA without config yet) or `NN[GRP] text`; null for anything else. */
export function parseCharonLine(line: string): CharonLine | null {
  const m = /^(\d+)\[(\w+)\] (?:<(?:([^|>]*)\|)?\d+> )?(.*)$/.exec(line.trim());
  if (!m) return null;
  return { thread: m[1]!, group: m[2]!, connection: m[3] || null, text: m[4]! };
}

const FAILURE_WORDS = /\b(unable|failed|failure|error|refused|invalid|discarded|not recognized)\b/i;
const SA_INSTALL_FAILED = /unable to install (?:inbound and outbound )?IPsec SA/;
const NETLINK_ERROR = /received netlink error: (.+)$/;

export class CharonLog {
  /** The last netlink error each charon thread logged: the reason for the failure it logs next. */
  private readonly netlinkErrors = new Map<string, string>();

  constructor(
    private readonly log: Logger,
    private readonly onSaInstallFailed: (connection: string | null, reason: string | null) => void,
  ) {}

  line(raw: string): void {
    const line = raw.trim();
    if (!line) return;
    const parsed = parseCharonLine(line);
    this.log[FAILURE_WORDS.test(parsed?.text ?? line) ? 'warn' : 'info'](line);
    if (!parsed) return;
    const nl = NETLINK_ERROR.exec(parsed.text);
    if (nl) this.netlinkErrors.set(parsed.thread, nl[1]!);
    else if (SA_INSTALL_FAILED.test(parsed.text)) {
      this.onSaInstallFailed(parsed.connection, this.netlinkErrors.get(parsed.thread) ?? null);
      this.netlinkErrors.delete(parsed.thread);
    }
  }
}
