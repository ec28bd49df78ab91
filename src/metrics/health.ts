/**
 * What /healthz reports: the daemon is healthy while no component has a
 * problem. A component reports a problem when it stops doing its job (a
 * packet direction is down, say) and clears it when it is back, so a
 * liveness probe sees a daemon that runs but moves no traffic.
 */
export interface HealthReporter {
  /** Set (a reason) or clear (null) the problem of one component. */
  report(component: string, problem: string | null): void;
}

export class Health implements HealthReporter {
  private readonly problems = new Map<string, string>();

  report(component: string, problem: string | null): void {
    if (problem === null) this.problems.delete(component);
    else this.problems.set(component, problem);
  }

  /**
   * null when healthy, else the components with a problem, by name only:
   * what /healthz answers (it may be reachable from anywhere; the details,
   * which can name cloud resources and errors, stay in the log and
   * /metrics).
   */
  summary(): string | null {
    if (this.problems.size === 0) return null;
    return [...this.problems.keys()].join(', ');
  }

  /** null when healthy, else one line per problem with its detail (logs, tests). */
  problem(): string | null {
    if (this.problems.size === 0) return null;
    return [...this.problems].map(([c, p]) => `${c}: ${p}`).join('\n');
  }
}
