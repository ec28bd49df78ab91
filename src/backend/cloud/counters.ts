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

  /** A failure by its code: one of KNOWN_ERROR_CODES, else "other" (a cloud's reply is not a label we let grow). */
  error(code: string): void {
    bump(this.apiErrors, errorLabel(code));
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

/**
 * The error codes our backends act on or that operators look for, as the
 * clouds spell them (EC2, Compute Engine, Aliyun VPC), and ours. A metric
 * label must come from a fixed list: whatever else a cloud (or whoever
 * answers in its place) sends is counted as "other".
 */
export const KNOWN_ERROR_CODES: ReadonlySet<string> = new Set([
  // ours
  'unknown', 'metadata_unreachable', 'CredentialsProviderError', 'TimeoutError', 'NetworkingError',
  // EC2
  'AuthFailure', 'ExpiredToken', 'InvalidAccessKeyId', 'InvalidClientTokenId', 'RequestExpired', 'SignatureDoesNotMatch', 'UnrecognizedClientException',
  'UnauthorizedOperation', 'RouteLimitExceeded', 'InvalidRoute.NotFound', 'RouteAlreadyExists', 'InvalidRouteTableID.NotFound', 'InvalidRouteTableId.Malformed',
  'RequestLimitExceeded', 'Throttling', 'ThrottlingException', 'InternalError', 'ServiceUnavailable', 'InvalidParameterValue', 'InvalidInstanceID.NotFound',
  // Compute Engine
  'QUOTA_EXCEEDED', 'ALREADY_EXISTS', 'RESOURCE_NOT_READY', 'RESOURCE_IN_USE_BY_ANOTHER_RESOURCE', 'RESOURCE_NOT_FOUND', 'UNKNOWN',
  'rateLimitExceeded', 'userRateLimitExceeded', 'quotaExceeded', 'notFound', 'alreadyExists', 'forbidden', 'unauthorized', 'authError', 'backendError', 'internalError',
  // Aliyun VPC
  'Forbidden.RAM', 'Forbidden', 'InvalidAccessKeyId.NotFound', 'IncompleteSignature', 'InvalidRouteEntry.NotFound', 'InvalidRouteEntry.Duplicate',
  'QuotaExceeded.RouteEntry', 'IncorrectRouteEntryStatus', 'IncorrectStatus.RouteTableStatus', 'OperationConflict', 'ServiceUnavailable', 'Throttling.User', 'InvalidVpcId.NotFound',
  // Tencent Cloud VPC
  'AuthFailure.SecretIdNotFound', 'AuthFailure.SignatureFailure', 'AuthFailure.SignatureExpire', 'AuthFailure.InvalidSecretId', 'AuthFailure.UnauthorizedOperation',
  'RequestLimitExceeded', 'LimitExceeded', 'LimitExceeded.RouteTableRouteLimitExceeded', 'InvalidParameterValue.Duplicate', 'ResourceNotFound', 'ResourceInUse',
  'InternalError', 'InternalServerError', 'ResourceUnavailable', 'UnsupportedOperation',
]);

export function errorLabel(code: string): string {
  if (KNOWN_ERROR_CODES.has(code)) return code;
  // HTTP statuses: a bounded set of three digits.
  if (/^(metadata|http)_[1-5]\d\d$/.test(code)) return code;
  return 'other';
}
