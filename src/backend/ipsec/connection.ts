/**
 * What one remote lease calls for, computed and nothing else: the IKE
 * connection loaded into charon (named as flannel names it, so `swanctl
 * --list-conns` reads the same on a mixed cluster), the shared key entry for
 * a peer, and the three xfrm policies flannel installs per remote host.
 */
import type { ViciMessage } from '../../vici/codec.js';
import type { XfrmPolicySpec } from '../../net/xfrm-policy.js';
import { formatIP4Net, type IP4Net } from '../../net/ipaddr.js';
import { FLANNEL_REQID, IKE_PROPOSAL, type EspMode, type IpsecOptions } from './options.js';

/** One end of a tunnel: a host's PublicIP and its lease's subnet ("10.5.1.0/24"). */
export interface TunnelEnd {
  publicIP: string;
  subnet: string;
}

export function tunnelEnd(lease: { subnet: IP4Net | null; attrs: { publicIP: string } }): TunnelEnd | null {
  return lease.subnet ? { publicIP: lease.attrs.publicIP, subnet: formatIP4Net(lease.subnet) } : null;
}

/** flannel's name: `<local PublicIP>-<local subnet>-<remote subnet>-<remote PublicIP>`. */
export function connectionName(local: TunnelEnd, remote: TunnelEnd): string {
  return `${local.publicIP}-${local.subnet}-${remote.subnet}-${remote.publicIP}`;
}

/** flannel's CHILD_SA name: `<local subnet>-<remote subnet>`. */
export function childName(local: TunnelEnd, remote: TunnelEnd): string {
  return `${local.subnet}-${remote.subnet}`;
}

/**
 * The shared key's VICI id. flannel loads keys without one, so every lease
 * event adds another copy to charon; with an id a reload replaces the entry
 * and a departed peer's key can be unloaded.
 */
export function sharedKeyId(publicIP: string): string {
  return `flannel-${publicIP}`;
}

export function sharedKeyMessage(publicIP: string, psk: string): ViciMessage {
  return { id: sharedKeyId(publicIP), type: 'IKE', data: psk, owners: [publicIP] };
}

/**
 * The load-conn body for one peer, with flannel's settings: IKEv2,
 * aes256-sha256-modp4096, retry for ever, PSK both ways, the CHILD_SA
 * started at once, re-trapped when closed, restarted on dead peer,
 * rekeyed hourly, tunnel mode, reqid 11. With kernel ESP charon installs no
 * policies (we install flannel's three); with userspace ESP (libipsec)
 * charon must hold them itself, as libipsec keeps its own SPD, and each
 * peer gets a reqid of its own.
 */
export function connectionDefinition(local: TunnelEnd, remote: TunnelEnd, opts: Pick<IpsecOptions, 'udpEncap' | 'espProposal'>, esp: EspMode, startAction: 'start' | 'none' = 'start'): ViciMessage {
  return {
    [connectionName(local, remote)]: {
      local_addrs: [local.publicIP],
      remote_addrs: [remote.publicIP],
      proposals: [IKE_PROPOSAL],
      version: '2',
      keyingtries: '0',
      encap: opts.udpEncap ? 'yes' : 'no',
      local: { auth: 'psk' },
      remote: { auth: 'psk' },
      children: {
        [childName(local, remote)]: {
          local_ts: [local.subnet],
          remote_ts: [remote.subnet],
          esp_proposals: [opts.espProposal],
          start_action: startAction,
          close_action: 'trap',
          dpd_action: 'restart',
          mode: 'tunnel',
          // flannel's reqid ties its kernel policies to the SAs; libipsec picks SAs by reqid alone, so
          // there every peer needs its own (charon assigns them).
          ...(esp === 'kernel' ? { reqid: String(FLANNEL_REQID) } : {}),
          rekey_time: '1h',
          policies: esp === 'kernel' ? 'no' : 'yes',
        },
      },
    },
  };
}

/**
 * flannel's three policies for a peer: out (our subnet to theirs, tunnel
 * from us to them), in and fwd (their subnet to ours, tunnel from them to
 * us; fwd because pod traffic is forwarded, not local).
 */
export function policiesFor(local: TunnelEnd, remote: TunnelEnd): XfrmPolicySpec[] {
  const tmplOut = { tmplSrc: local.publicIP, tmplDst: remote.publicIP, reqid: FLANNEL_REQID };
  const tmplIn = { tmplSrc: remote.publicIP, tmplDst: local.publicIP, reqid: FLANNEL_REQID };
  return [
    { src: local.subnet, dst: remote.subnet, dir: 'out', ...tmplOut },
    { src: remote.subnet, dst: local.subnet, dir: 'in', ...tmplIn },
    { src: remote.subnet, dst: local.subnet, dir: 'fwd', ...tmplIn },
  ];
}
