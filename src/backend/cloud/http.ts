/**
 * Plain HTTP for the metadata services (IMDS, GCE's metadata server,
 * Aliyun's): short timeouts, and failures as CloudErrors that name the
 * service and what went wrong, so "metadata service down at start" reads as
 * such in the log and is retried.
 */
import { CloudError } from './types.js';
import type { CloudCounters } from './counters.js';

export interface MetadataRequest {
  method?: 'GET' | 'PUT';
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export interface MetadataReply {
  status: number;
  body: string;
  /** Response headers, names lower-cased. */
  headers: Record<string, string>;
}

/** One request; throws CloudError('retry') when the service does not answer. */
export async function metadataRequest(service: string, url: string, counters: CloudCounters, req: MetadataRequest = {}): Promise<MetadataReply> {
  counters.call(`metadata ${req.method ?? 'GET'}`);
  let res: Response;
  try {
    res = await fetch(url, { method: req.method ?? 'GET', headers: req.headers, signal: AbortSignal.timeout(req.timeoutMs ?? 2000), redirect: 'error' });
  } catch (err) {
    counters.error('metadata_unreachable');
    throw new CloudError('retry', `${service} at ${new URL(url).origin} is not answering (${describeFetchError(err)}): is this host in the cloud, or is the endpoint option right?`);
  }
  return { status: res.status, body: await boundedText(res, service), headers: Object.fromEntries(res.headers) };
}

/** The most a metadata reply may hold: its values are ids, addresses, short tokens and small JSON documents. */
export const METADATA_BODY_LIMIT = 64 * 1024;

/** The body as text, refused (CloudError 'retry') when it exceeds `limit` bytes: whatever answers never makes us buffer more. */
export async function boundedText(res: Response, service: string, limit = METADATA_BODY_LIMIT): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > limit) {
    await res.body?.cancel().catch(() => {});
    throw new CloudError('retry', `${service} answered with ${declared} bytes, more than the ${limit} a reply may have`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new CloudError('retry', `${service} answered with more than the ${limit} bytes a reply may have`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** GET that must answer 200; the body, trimmed. */
export async function metadataGet(service: string, url: string, counters: CloudCounters, headers?: Record<string, string>): Promise<string> {
  const res = await metadataRequest(service, url, counters, { headers });
  if (res.status !== 200) {
    counters.error(`metadata_${res.status}`);
    throw new CloudError('retry', `${service}: ${new URL(url).pathname} answered HTTP ${res.status}`);
  }
  return res.body.trim();
}

function describeFetchError(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'timed out';
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
