/**
 * One line per event: `LEVEL timestamp [component] message key=value...`.
 * Values of fields whose names look secret are redacted, so a careless call
 * site cannot print a password or key.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_FIELD = /pass|secret|key|token|credential|psk/i;

let threshold: LogLevel = (process.env.FLANNELD_LOG_LEVEL as LogLevel) in ORDER ? (process.env.FLANNELD_LOG_LEVEL as LogLevel) : 'info';
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

/** Tests capture log lines through this. */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(component: string): Logger;
}

function renderValue(key: string, v: unknown): string {
  if (SECRET_FIELD.test(key)) return '<redacted>';
  if (v instanceof Error) v = v.message;
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  const one = (s ?? 'undefined').replace(/\s*\n\s*/g, ' ');
  return /[\s"=]/.test(one) ? JSON.stringify(one) : one;
}

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[level] < ORDER[threshold]) return;
    let line = `${level.toUpperCase().padEnd(5)} ${new Date().toISOString()} [${component}] ${msg.replace(/\s*\n\s*/g, ' ')}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${renderValue(k, v)}`;
    sink(line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(`${component}/${c}`),
  };
}
