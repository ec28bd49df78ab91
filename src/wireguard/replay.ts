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

export class ReplayWindow {
  private readonly bits = new Uint32Array(WORDS);
  /** Newest counter accepted + 1 (0: none yet). */
  private top = 0;

  /** Accept `counter` (and remember it) or refuse it as replayed, too old or out of range. */
  accept(counter: number): boolean {
    if (!(counter >= 0 && counter < MAX_COUNTER)) return false;
    if (counter >= this.top) {
      // Moving forward: clear the words that slide out, at most the whole window.
      const oldWord = this.top === 0 ? -1 : Math.floor((this.top - 1) / 32);
      const newWord = Math.floor(counter / 32);
      const clear = Math.min(newWord - oldWord, WORDS);
      for (let i = 1; i <= clear; i++) this.bits[(oldWord + i) % WORDS] = 0;
      this.top = counter + 1;
    } else if (this.top - counter > REPLAY_WINDOW - 32) {
      return false;
    }
    const word = Math.floor(counter / 32) % WORDS;
    const bit = 1 << counter % 32;
    if (this.bits[word]! & bit) return false;
    this.bits[word] = this.bits[word]! | bit;
    return true;
  }

  reset(): void {
    this.bits.fill(0);
    this.top = 0;
  }
}
