/**
 * GCE's metadata server: every request carries `Metadata-Flavor: Google`
 * and every answer must carry it back (a proxy or a captive portal that
 * answers instead is not the metadata server). It also hands out the
 * instance service account's access tokens.
 */
import { CloudError } from '../cloud/types.js';
import { metadataRequest } from '../cloud/http.js';
import type { CloudCounters } from '../cloud/counters.js';

const SERVICE = 'GCE metadata server';

export interface AccessToken {
  token: string;
  expiresAt: number;
}

export class GceMetadata {
  constructor(
    private readonly base: string,
    private readonly counters: CloudCounters,
  ) {}

  async get(path: string): Promise<string> {
    const res = await this.request(path);
    if (res.status !== 200) {
      this.counters.error(`metadata_${res.status}`);
      throw new CloudError('retry', `${SERVICE}: ${path} answered HTTP ${res.status}`);
    }
    return res.body.trim();
  }

  /** The last path element of a metadata value ("projects/123/zones/us-central1-a" -> "us-central1-a"). */
  async getName(path: string): Promise<string> {
    const v = await this.get(path);
    return v.slice(v.lastIndexOf('/') + 1);
  }

  async token(): Promise<AccessToken> {
    const path = 'instance/service-accounts/default/token';
    const res = await this.request(path);
    if (res.status === 404) {
      throw new CloudError('fatal', 'this instance has no service account, so there are no credentials: create it with `--scopes compute-rw` (see the README), or set GOOGLE_APPLICATION_CREDENTIALS');
    }
    if (res.status !== 200) throw new CloudError('retry', `${SERVICE}: ${path} answered HTTP ${res.status}`);
    let parsed: { access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(res.body);
    } catch {
      throw new CloudError('retry', `${SERVICE}: ${path} did not answer JSON`);
    }
    if (typeof parsed.access_token !== 'string' || typeof parsed.expires_in !== 'number') throw new CloudError('retry', `${SERVICE}: ${path} answered without access_token/expires_in`);
    return { token: parsed.access_token, expiresAt: Date.now() + parsed.expires_in * 1000 };
  }

  private async request(path: string) {
    const res = await metadataRequest(SERVICE, `${this.base}/computeMetadata/v1/${path}`, this.counters, { headers: { 'Metadata-Flavor': 'Google' } });
    if (res.status === 200 && res.headers['metadata-flavor'] !== 'Google') {
      throw new CloudError('retry', `${SERVICE}: the answer from ${this.base} lacks Metadata-Flavor: Google (not the metadata server?)`);
    }
    return res;
  }
}
