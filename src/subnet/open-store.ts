/**
 * Picks and opens the KV store the subnet manager runs on: the embedded
 * store when a directory is named, else etcd. One copy for flanneld and
 * flannelctl, so both read the same flags the same way.
 */
import type { KvStore } from './kv.js';

export interface StoreChoice {
  /** Directory of the embedded store; when set, etcd is not used. */
  localStore?: string;
  etcdEndpoints: string[];
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  /** How long the embedded store waits for its lock (default: the store's). */
  lockTimeoutMs?: number;
}

export async function openStore(choice: StoreChoice): Promise<KvStore> {
  if (choice.localStore) {
    // Loaded on demand so each daemon only loads the store it uses.
    const { LocalStore } = await import('./local-store.js');
    return new LocalStore({ dir: choice.localStore, lockTimeoutMs: choice.lockTimeoutMs });
  }
  const { EtcdStore } = await import('./etcd-store.js');
  // Empty strings are flags left at their default: not set.
  return new EtcdStore({
    endpoints: choice.etcdEndpoints,
    caFile: choice.etcdCafile || undefined,
    certFile: choice.etcdCertfile || undefined,
    keyFile: choice.etcdKeyfile || undefined,
    username: choice.etcdUsername || undefined,
    password: choice.etcdPassword || undefined,
  });
}
