/**
 * What a cloud backend did, for /metrics: API calls by action, failures by
 * the cloud's error code, route writes and reconcile rounds. The API call
 * count is the figure that matters to a cloud account (rate limits are per
 * account, shared with everything else that calls the same API).
 */
export class CloudCounters {
  readonly apiCalls = new Map<string, number>();
  readonly apiErrors = new Map<string, number>();
  readonly routeWrites = new Map<string, number>();
  reconciles = 0;
  reconcileFailures = 0;

  constructor(private readonly backend: string) {}

  call(action: string): void {
    bump(this.apiCalls, action);
  }

  error(code: string): void {
    bump(this.apiErrors, code);
  }

  write(op: 'create' | 'replace' | 'delete'): void {
    bump(this.routeWrites, op);
  }

  render(): string {
    const b = this.backend;
    const lines: string[] = [];
    const family = (name: string, help: string, label: string, values: Map<string, number>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [k, v] of [...values].sort()) lines.push(`${name}{backend="${b}",${label}="${k}"} ${v}`);
    };
    family('flannel_cloud_api_calls_total', 'Cloud API and metadata calls made, by action.', 'action', this.apiCalls);
    family('flannel_cloud_api_errors_total', 'Cloud API calls that failed, by error code.', 'code', this.apiErrors);
    family('flannel_cloud_route_writes_total', 'Routes created, replaced or deleted in the cloud route table.', 'op', this.routeWrites);
    lines.push('# HELP flannel_cloud_reconciles_total Reconcile rounds of the cloud route table.', '# TYPE flannel_cloud_reconciles_total counter');
    lines.push(`flannel_cloud_reconciles_total{backend="${b}",result="ok"} ${this.reconciles}`);
    lines.push(`flannel_cloud_reconciles_total{backend="${b}",result="failed"} ${this.reconcileFailures}`);
    return lines.join('\n') + '\n';
  }
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}
