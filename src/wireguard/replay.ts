/**
 * The receive side's sliding window over transport counters (whitepaper
 * 5.4.6, RFC 6479's bitmap): a counter is accepted once, and only if it is
 * newer than the newest seen minus the window. Checked after the packet
 * authenticated, so forged counters cannot move the window.
 *
 * Counters are plain numbers: a key lives at most REJECT_AFTER_TIME (180 s),
 * far too short to send 2^53 packets, so a counter at or above 2^53 is
 * refused instead of paying for BigInt arithmetic on every packet.
 */
export const REPLAY_WINDOW = 2048;
const WORDS = REPLAY_WINDOW / 32;
export const MAX_COUNTER = 2 ** 53 - 1;

/**
 * One window per keypair slot, in flat arrays: the rx worker's TypeScript
 * (transport.ts) and its lone-packet hops in C (native/hop_wg.c) accept
 * against the same words, so a counter is taken once whichever of them
 * sees it. A window belongs to one generation of its slot: a keypair
 * written into the slot again starts it afresh.
 */
export class ReplayWindows {
  readonly bits: Uint32Array;
  /** Per slot: newest counter accepted + 1 (0: none yet). */
  readonly top: Float64Array;
  /** Per slot: the keypair generation the window belongs to (-1: none yet). */
  readonly gen: Int32Array;

  constructor(readonly capacity: number) {
    this.bits = new Uint32Array(capacity * WORDS);
    this.top = new Float64Array(capacity);
    this.gen = new Int32Array(capacity).fill(-1);
  }

  /** Accept `counter` for slot k's keypair of generation `gen` (and remember it), or refuse it as replayed, too old or out of range. */
  accept(k: number, gen: number, counter: number): boolean {
    const base = k * WORDS;
    if (this.gen[k] !== gen) {
      this.bits.fill(0, base, base + WORDS);
      this.top[k] = 0;
      this.gen[k] = gen;
    }
    if (!(counter >= 0 && counter < MAX_COUNTER)) return false;
    const top = this.top[k]!;
    if (counter >= top) {
      // Moving forward: clear the words that slide out, at most the whole window.
      const oldWord = top === 0 ? -1 : Math.floor((top - 1) / 32);
      const newWord = Math.floor(counter / 32);
      const clear = Math.min(newWord - oldWord, WORDS);
      for (let i = 1; i <= clear; i++) this.bits[base + ((oldWord + i) % WORDS)] = 0;
      this.top[k] = counter + 1;
    } else if (top - counter > REPLAY_WINDOW - 32) {
      return false;
    }
    const word = base + (Math.floor(counter / 32) % WORDS);
    const bit = 1 << counter % 32;
    if (this.bits[word]! & bit) return false;
    this.bits[word] = this.bits[word]! | bit;
    return true;
  }
}
