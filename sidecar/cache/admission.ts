/**
 * Frequency-aware admission for the in-process hot tier (TinyLFU): a new entry takes the place of the
 * least recently used ones only when it has been asked for more often, lately, than each of them. Under
 * a skewed workload (a few images asked for far more than the rest, over a catalogue larger than the
 * tier) the popular ones stay in process; a one-off scan of many images cannot flush them, since an
 * image asked for once never outweighs one asked for again and again.
 *
 * Pure logic, O(1) per access, bounded memory: a count-min sketch of 4-bit-ranged counters (one byte
 * each, 4 rows) whose counts are halved every `10 × entries` accesses, so the frequencies are recent ones.
 */

/** Entries the sketch is sized for, from the tier's bytes: an average hot entry of this size. */
export const SKETCH_BYTES_PER_ENTRY = 8 * 1024
const MIN_ENTRIES = 16
const MAX_ENTRIES = 1 << 18
const DEPTH = 4
const MAX_COUNT = 15
/** Victims compared at most for one candidate (the bytes a large entry needs may be many small ones'). */
export const MAX_VICTIMS = 8

/** A count-min sketch of recent access frequencies (0–15) of string keys. */
export class FrequencySketch {
  private readonly table: Uint8Array
  private readonly mask: number
  /** Increments until the counts are halved (aging). */
  readonly sampleSize: number
  private additions = 0
  /** The four counters' indexes of the key last hashed (no allocation per access). */
  private readonly at = new Int32Array(DEPTH)

  /** The entries it is sized for (see MemoryStore: a tier holding more gets a larger sketch). */
  readonly entries: number

  /** Sized for a tier of about `entries` entries: 4 × that many counters per row, rounded up to a power of two. */
  constructor(entries: number) {
    const n = Math.min(Math.max(Math.ceil(entries), MIN_ENTRIES), MAX_ENTRIES)
    this.entries = n
    let width = 1
    while (width < 4 * n) width *= 2
    this.mask = width - 1
    this.table = new Uint8Array(DEPTH * width)
    this.sampleSize = 10 * n
  }

  /** Bytes the counters take (the sketch's whole memory, whatever the number of keys seen). */
  get bytes(): number {
    return this.table.byteLength
  }

  /** One access of `key`: its counters go up by one (only the smallest ones: conservative update). */
  increment(key: string): void {
    const min = this.locate(key)
    if (min >= MAX_COUNT) return
    const { table, at } = this
    for (let i = 0; i < DEPTH; i++) if (table[at[i]!] === min) table[at[i]!] = min + 1
    if (++this.additions >= this.sampleSize) this.age()
  }

  /** The key's estimated recent accesses (never below the true count since the last aging, at most 15). */
  frequency(key: string): number {
    return this.locate(key)
  }

  /** Halves every count: what was popular long ago weighs half as much as what is popular now. */
  private age(): void {
    const { table } = this
    for (let i = 0; i < table.length; i++) table[i] = table[i]! >>> 1
    this.additions = this.additions >>> 1
  }

  /** Fills `at` with the key's counter in each row; returns the smallest count. */
  private locate(key: string): number {
    // FNV-1a over the UTF-16 code units, then two mixes of it (double hashing: row i at h1 + i·h2).
    let h = 0x811c9dc5
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
    let h1 = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
    h1 ^= h1 >>> 13
    let h2 = Math.imul(h ^ (h >>> 15), 0xc2b2ae35)
    h2 = (h2 ^ (h2 >>> 16)) | 1
    const width = this.mask + 1
    let min = MAX_COUNT
    for (let i = 0; i < DEPTH; i++) {
      const index = i * width + ((h1 + Math.imul(i, h2)) & this.mask)
      this.at[i] = index
      const count = this.table[index]!
      if (count < min) min = count
    }
    return min
  }
}

/**
 * TinyLFU's decision: `candidate` (not held) needs `over` bytes freed from a full tier; `victims`
 * are the entries that would go, least recently used first, with their sizes. Admitted when it is
 * more frequent than every victim compared (at most MAX_VICTIMS of them); a tie keeps what is held.
 */
export function admits(sketch: FrequencySketch, candidate: string, over: number, victims: Iterable<readonly [key: string, bytes: number]>): boolean {
  if (over <= 0) return true
  const wanted = sketch.frequency(candidate)
  if (wanted === 0) return false
  let freed = 0
  let compared = 0
  for (const [key, bytes] of victims) {
    if (sketch.frequency(key) >= wanted) return false
    freed += bytes
    if (freed >= over || ++compared === MAX_VICTIMS) return true
  }
  return true
}

/** A sketch for a tier of `maxSize` bytes (see SKETCH_BYTES_PER_ENTRY). */
export function sketchFor(maxSize: number): FrequencySketch {
  return new FrequencySketch(maxSize / SKETCH_BYTES_PER_ENTRY)
}

/**
 * The sketch for a tier now holding `held` entries: the same one while it is sized for that many, else
 * one for twice as many (up to the cap). Smaller images than SKETCH_BYTES_PER_ENTRY assumes mean more
 * entries, and a sketch too narrow for them would count mostly collisions. The counts start again (a
 * few times in a process's life at most: each time twice the size).
 */
export function fitSketch(sketch: FrequencySketch, held: number): FrequencySketch {
  return held <= sketch.entries || sketch.entries >= MAX_ENTRIES ? sketch : new FrequencySketch(2 * held)
}
