/**
 * The sequence counter the shared route tables live under (routes.ts,
 * routes6.ts): word 0 of the table. The one writer makes it odd, rewrites
 * the table, makes it even again; a reader that sees it moved copies the
 * table and keeps the copy only if the counter did not move meanwhile.
 * Traffic never waits for an update, and workers never need their event
 * loop (busy in the packet loop) to hear about one.
 */
export const SEQ_WORD = 0;

/**
 * Rewrite the table inside `write`. Plain stores there are fine: the two
 * atomic bumps order them for readers, who re-check the counter after
 * copying, so a table of 10,000 routes is written at memory speed (4
 * Atomics.store per route cost ~0.8 ms per publish of 5,000 in the lease
 * bench).
 */
export function publishUnderSeqlock(words: Uint32Array, write: () => void): void {
  Atomics.add(words, SEQ_WORD, 1); // odd: readers retry
  write();
  Atomics.add(words, SEQ_WORD, 1); // even: consistent again
}

/**
 * When the counter moved past `seen`, copy the table with `snapshot` until
 * a copy is consistent and return its counter; -1 when nothing changed.
 */
export function readUnderSeqlock(words: Uint32Array, seen: number, snapshot: () => void): number {
  if (Atomics.load(words, SEQ_WORD) === seen) return -1;
  for (;;) {
    const g = Atomics.load(words, SEQ_WORD);
    if (g & 1) continue; // the writer is mid-update; it finishes within microseconds
    snapshot();
    if (Atomics.load(words, SEQ_WORD) === g) return g;
  }
}

/** Entries of `entryWords` words that fit a buffer after `headerWords`. */
export function tableCapacity(words: Uint32Array, headerWords: number, entryWords: number): number {
  return Math.floor((words.length - headerWords) / entryWords);
}

/**
 * A worker's private copy of a shared table: `refresh` (between batches)
 * copies it when the writer moved the counter, then rebuilds the
 * subclass's indexes. Subclasses call refresh() at the end of their
 * constructor, once their own fields exist.
 */
export abstract class SharedTableReader {
  protected readonly words: Uint32Array;
  private gen = -1;

  constructor(sab: SharedArrayBuffer) {
    this.words = new Uint32Array(sab);
  }

  /** Re-read the table if the writer changed it. Returns true when it did. */
  refresh(): boolean {
    const g = readUnderSeqlock(this.words, this.gen, () => this.snapshot());
    if (g < 0) return false;
    this.gen = g;
    this.buildIndexes();
    return true;
  }

  get generation(): number {
    return this.gen;
  }

  /** Copy the table out of shared memory (may run more than once per refresh). */
  protected abstract snapshot(): void;
  /** Rebuild lookup structures from the copy. */
  protected abstract buildIndexes(): void;
}
