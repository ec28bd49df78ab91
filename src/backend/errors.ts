/**
 * Errors that mean "this backend cannot run with this config on this host":
 * the daemon reports them in one line and exits 1 before touching anything.
 */
export class BackendOptionError extends Error {
  constructor(backend: string, option: string, want: string, got: unknown) {
    super(`invalid ${backend} backend config: ${option} must be ${want}, got ${JSON.stringify(got)}`);
    this.name = 'BackendOptionError';
  }
}

/** The host lacks what the backend needs (a kernel module, a program). */
export class BackendUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}
