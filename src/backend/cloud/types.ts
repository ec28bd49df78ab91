/**
 * The contract between the shared route-sync loop and one cloud's API
 * (aws-vpc, gce, ali-vpc): read a route table, write one route, say who we
 * are. Each cloud maps its SDK's errors onto CloudError kinds so the loop
 * decides retries the same way for all three.
 */

/** One route of a cloud route table, as the loop needs to see it. */
export interface CloudRoute {
  /** Destination CIDR, canonical ("10.20.5.0/24"). */
  dest: string;
  /**
   * What the route points at, in the form `CloudIdentity.target` uses
   * (an ENI id, an instance URL, an instance id); null when it points at
   * nothing we could be (a gateway, a deleted instance).
   */
  target: string | null;
  /** blackhole: the target is gone (AWS); pending: being created (Aliyun, GCE operations). */
  state: 'active' | 'blackhole' | 'pending';
  /** The cloud's own handle for the route when it needs one to delete it (GCE route name, Aliyun entry id). */
  handle?: string;
  /** Created by a person or the cloud itself (local, system, gateway routes): never ours to write. */
  foreign?: boolean;
  /**
   * Whether the route carries the mark flannel daemons put on the routes
   * they create (GCE: flannel's route name; Aliyun: the entry name);
   * undefined where the cloud keeps no such mark (EC2 routes have neither
   * names nor tags): the loop then asks `targetOfHosts`.
   */
  written?: boolean;
}

/** Who this host is in the cloud, found once (metadata service plus API look-ups). */
export interface CloudIdentity {
  /** The next hop our lease's route must point at. */
  target: string;
  /** Words for the log: instance id, region, zone. */
  describe: Record<string, string>;
  /** The route tables to keep our route in (AWS may have several; GCE has one per project). */
  tables: string[];
}

export interface RouteCloud {
  /** Backend type, for logs and metrics ("aws-vpc"). */
  readonly name: string;
  /** How many routes one table holds before the cloud refuses more (AWS and Aliyun 50, GCE 100 per project by default). */
  readonly routeLimit: number;
  /** Find our identity; called until it succeeds. Throws CloudError. */
  discover(): Promise<CloudIdentity>;
  /** One-time work once the identity is known (AWS: the source/destination check). Failures here are warnings. */
  afterDiscover?(identity: CloudIdentity): Promise<void>;
  listRoutes(table: string): Promise<CloudRoute[]>;
  /** Create the route and return when the cloud says it is in place (operations done, entry available). */
  createRoute(table: string, dest: string, target: string): Promise<void>;
  /** Point an existing route (a blackhole, or one to another target) at target. */
  replaceRoute(table: string, existing: CloudRoute, target: string): Promise<void>;
  /** Delete the route; a route that is already gone is not an error. */
  deleteRoute(table: string, route: CloudRoute): Promise<void>;
  /**
   * For clouds whose routes carry no mark: the target the daemon of a host
   * with each of these PublicIPs writes (the ENI holding that address), in
   * one call; hosts not found are absent from the map.
   */
  targetOfHosts?(publicIPs: string[]): Promise<Map<string, string>>;
}

/**
 * - retry: worth trying again after a pause (throttling, 5xx, the metadata
 *   service not answering, a route table busy with another change);
 * - fatal: trying again cannot help (credentials missing or refused, a
 *   permission that setup needs, a route table that does not exist);
 * - blocked: only a person can fix it (the table or the project's quota
 *   is full, our CIDR holds a gateway route): reported, retried slowly;
 * - conflict: someone wrote the same route meanwhile; look again.
 */
export type CloudErrorKind = 'retry' | 'fatal' | 'blocked' | 'conflict';

/** A cloud API failure with a message fit for the log: codes and names, never credentials. */
export class CloudError extends Error {
  constructor(
    readonly kind: CloudErrorKind,
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'CloudError';
  }
}
