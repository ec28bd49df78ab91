/**
 * Prometheus text exposition, assembled from renderers that the daemon and
 * the backends register (GET /metrics on the healthz port).
 */
export interface MetricsRegistry {
  /** Register a callback rendering lines of Prometheus text exposition format. */
  register(name: string, render: () => string): void;
}

export class Metrics implements MetricsRegistry {
  private readonly renderers = new Map<string, () => string>();
  register(name: string, render: () => string): void {
    this.renderers.set(name, render);
  }
  render(): string {
    return [...this.renderers.values()].map((r) => r()).join('');
  }
}
