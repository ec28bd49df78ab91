/**
 * Errors that mean "this backend cannot run with this config on this host":
 * the daemon reports them in one line and exits 1 before touching anything.
 */
export class BackendOptionError extends Error {
  constructor(backend: string, option: string, want: string, got: unknown) {
    super(`invalid ${backend} backend config: ${option} must be ${want}, got ${JSON.stringify(got)}`);
    this.name = 'BackendOptionError';
  }

  /** An option error in words of its own: for a value that must not be echoed (a PSK) or a check made elsewhere (by charon). */
  static saying(backend: string, option: string, what: string): BackendOptionError {
    const err = new BackendOptionError(backend, option, '', undefined);
    err.message = `invalid ${backend} backend config: ${option} ${what}`;
    return err;
  }
}

/** The host lacks what the backend needs (a kernel module, a program). */
export class BackendUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}
