/**
 * What /readyz reports: not ready until subnet.env is written and the
 * backend runs, and while the daemon waits for something (the API server,
 * a permission, this node's podCIDR). The reason is one of a few fixed
 * phrases, safe to answer to anyone who can reach the port; the details
 * are in the log. /healthz stays liveness: a daemon that waits is alive.
 */
export type WaitingFor =
  | 'starting'
  | 'waiting for the API server'
  | 'waiting for RBAC permissions'
  | 'waiting for this node in the API server'
  | "waiting for this node's podCIDR"
  | 'waiting for the network config'
  | 'starting the backend';

export class Readiness {
  private why: WaitingFor | null = 'starting';

  set(why: WaitingFor | null): void {
    this.why = why;
  }

  /** null when ready. */
  get waitingFor(): WaitingFor | null {
    return this.why;
  }
}
