/**
 * Options of the ipsec backend, as flannel reads them from the Backend
 * object: {"Type":"ipsec","PSK":"...","UDPEncap":false,"ESPProposal":"..."},
 * plus the host-local settings flannel hard-codes (where charon lives, its
 * socket and pid file), which here come from variables so several daemons
 * can share one machine.
 */
import { goField } from '../../config/go-json.js';
import { BackendOptionError } from '../errors.js';
import { boolOption } from '../option-readers.js';

export const DEFAULT_ESP_PROPOSAL = 'aes128gcm16-sha256-prfsha256-ecp256';
/** flannel refuses shorter keys: a PSK is only as strong as its length. */
export const MIN_PSK_LENGTH = 96;
/** flannel's IKE proposal, fixed (not an option there either). */
export const IKE_PROPOSAL = 'aes256-sha256-modp4096';
/** flannel's reqid for every CHILD_SA and policy template. */
export const FLANNEL_REQID = 11;
/** Where each daemon keeps charon's config, pid file and VICI socket by default. */
export const DEFAULT_RUN_DIR = '/run/flannel/ipsec';

/** Who does ESP: the kernel's xfrm (flannel's way) or strongSwan's userspace libipsec. */
export type EspMode = 'kernel' | 'userspace';

export interface IpsecOptions {
  psk: string;
  udpEncap: boolean;
  espProposal: string;
}

export interface IpsecHostSettings {
  /** charon's executable; null: search flannel's list of paths. */
  charonPath: string | null;
  /** Directory for strongswan.conf, charon.pid and charon.vici (charon's /run). */
  runDir: string;
  /** 'auto': the kernel's ESP when it has it, else userspace. */
  esp: EspMode | 'auto';
}

/** A PSK error; the message never contains the key, not even a part of it. */
const pskError = (why: string) => BackendOptionError.saying('ipsec', 'PSK', why);

export function parseIpsecOptions(cfg: Record<string, unknown>): IpsecOptions {
  const psk = goField(cfg, 'PSK');
  if (psk === undefined || psk === null || psk === '') throw pskError(`is required: a pre-shared key of at least ${MIN_PSK_LENGTH} characters, the same on every host`);
  if (typeof psk !== 'string') throw pskError('must be a string');
  if (psk.length < MIN_PSK_LENGTH) throw pskError(`is too short: ${psk.length} characters, at least ${MIN_PSK_LENGTH} needed`);
  const proposal = goField(cfg, 'ESPProposal');
  let espProposal = DEFAULT_ESP_PROPOSAL;
  if (proposal !== undefined && proposal !== null && proposal !== '') {
    // Which algorithms exist is charon's to say (it answers when the proposal is loaded); here only its shape.
    if (typeof proposal !== 'string' || !/^[a-z0-9_-]+(,[a-z0-9_-]+)*$/i.test(proposal)) throw new BackendOptionError('ipsec', 'ESPProposal', 'a strongSwan ESP proposal such as "aes128gcm16-sha256-prfsha256-ecp256"', proposal);
    espProposal = proposal;
  }
  return { psk, udpEncap: boolOption('ipsec', cfg, 'UDPEncap'), espProposal };
}

/** Host settings from the environment: FLANNEL_IPSEC_CHARON, FLANNEL_IPSEC_RUN_DIR, FLANNEL_IPSEC_ESP. */
export function ipsecHostSettings(env: NodeJS.ProcessEnv = process.env): IpsecHostSettings {
  const esp = env.FLANNEL_IPSEC_ESP || 'auto';
  if (esp !== 'auto' && esp !== 'kernel' && esp !== 'userspace') throw new Error(`FLANNEL_IPSEC_ESP must be auto, kernel or userspace, got ${JSON.stringify(esp)}`);
  return { charonPath: env.FLANNEL_IPSEC_CHARON || null, runDir: env.FLANNEL_IPSEC_RUN_DIR || DEFAULT_RUN_DIR, esp };
}
