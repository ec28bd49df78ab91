/**
 * The EC2 instance metadata service: IMDSv2 first (PUT a session token, then
 * GET with it), IMDSv1 when the token endpoint is refused (an older setup or
 * a proxy that forbids PUT). The token is reused until it is rejected.
 */
import { CloudError } from '../cloud/types.js';
import { metadataRequest } from '../cloud/http.js';
import type { CloudCounters } from '../cloud/counters.js';

const SERVICE = 'EC2 instance metadata service';
const TOKEN_TTL_SECONDS = '21600';

export class InstanceMetadata {
  /** undefined: not asked yet; null: v1 (no token). */
  private token: string | null | undefined;

  constructor(
    private readonly base: string,
    private readonly counters: CloudCounters,
  ) {}

  /** GET /latest/meta-data/<path>, trimmed. */
  async get(path: string): Promise<string> {
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.token === undefined) this.token = await this.fetchToken();
      const headers: Record<string, string> = this.token ? { 'X-aws-ec2-metadata-token': this.token } : {};
      const res = await metadataRequest(SERVICE, `${this.base}/latest/meta-data/${path}`, this.counters, { headers });
      if (res.status === 200) return res.body.trim();
      // 401: the token expired or v1 is switched off on this instance; ask for a token again.
      if (res.status === 401 && attempt === 0) {
        this.token = undefined;
        continue;
      }
      this.counters.error(`metadata_${res.status}`);
      throw new CloudError('retry', `${SERVICE}: meta-data/${path} answered HTTP ${res.status}`);
    }
    throw new CloudError('retry', `${SERVICE}: meta-data/${path} keeps refusing our session token`);
  }

  private async fetchToken(): Promise<string | null> {
    const res = await metadataRequest(SERVICE, `${this.base}/latest/api/token`, this.counters, {
      method: 'PUT',
      headers: { 'X-aws-ec2-metadata-token-ttl-seconds': TOKEN_TTL_SECONDS },
    });
    if (res.status === 200 && res.body.trim()) return res.body.trim();
    // 403/404/405: no IMDSv2 here; fall back to plain GETs.
    if (res.status === 403 || res.status === 404 || res.status === 405) return null;
    throw new CloudError('retry', `${SERVICE}: token request answered HTTP ${res.status}`);
  }

  /** The ENI id and MAC of the interface holding `ip`, from the metadata alone (no EC2 API call). */
  async interfaceFor(ip: string): Promise<{ eniId: string; subnetId: string; vpcId: string } | null> {
    const primary = await this.get('mac');
    const listed = (await this.get('network/interfaces/macs/')).split('\n').map((m) => m.trim().replace(/\/$/, '')).filter(Boolean);
    const macs = [primary, ...listed.filter((m) => m !== primary)];
    for (const mac of macs) {
      const ips = (await this.get(`network/interfaces/macs/${mac}/local-ipv4s`)).split('\n').map((s) => s.trim());
      if (!ips.includes(ip)) continue;
      return {
        eniId: await this.get(`network/interfaces/macs/${mac}/interface-id`),
        subnetId: await this.get(`network/interfaces/macs/${mac}/subnet-id`),
        vpcId: await this.get(`network/interfaces/macs/${mac}/vpc-id`),
      };
    }
    return null;
  }
}
