/**
 * What the daemon is told to do: flannel's flags, as parsed from the
 * command line and FLANNELD_* variables by src/cli/options.ts.
 */
export interface DaemonOptions {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdKeyfile: string;
  etcdCertfile: string;
  etcdCafile: string;
  etcdUsername: string;
  etcdPassword: string;
  /** Embedded store directory; when set, etcd is not used. */
  localStore: string;
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach: string;
  subnetFile: string;
  publicIP: string;
  publicIPv6: string;
  subnetLeaseRenewMargin: number;
  ipMasq: boolean;
  healthzIP: string;
  healthzPort: number;
  iptablesResync: number;
  iptablesForwardRules: boolean;
  logLevel: string;
  /** Leases are Kubernetes Node objects (flannel's --kube-subnet-mgr); no etcd. */
  kubeSubnetMgr: boolean;
  kubeApiUrl: string;
  kubeconfigFile: string;
  kubeAnnotationPrefix: string;
  /** The network config file in Kubernetes mode (the ConfigMap's net-conf.json). */
  netConfigPath: string;
  setNodeNetworkUnavailable: boolean;
  /** Print what a kernel backend would change, change nothing. */
  dryRun: boolean;
  version: boolean;
  help: boolean;
}
