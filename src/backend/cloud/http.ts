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
  return { status: res.status, body: await res.text(), headers: Object.fromEntries(res.headers) };
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
