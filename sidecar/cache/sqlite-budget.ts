// Page and index overhead on top of the stored bytes, kept out of the entry budget so the
// file itself stays under the bound.
const OVERHEAD = 0.85
const PAGE_BYTES = 4096

/**
 * Pure: how a bound on disk (the file and its WAL together) is shared. The WAL is kept to a
 * sixteenth of the bound, from one page to 4 MiB (a checkpoint every that many bytes written, and
 * the file truncated back to it after); what is left, less page and index overhead (which also
 * covers the 32 KiB -shm index beside the WAL), is for entries.
 */
export function sqliteBudget(maxSize: number): { entries: number; walBytes: number; walPages: number } {
  const walPages = Math.min(1024, Math.max(1, Math.floor(maxSize / 16 / PAGE_BYTES)))
  return { entries: Math.max(Math.floor((maxSize - walPages * PAGE_BYTES) * OVERHEAD), 1), walBytes: walPages * PAGE_BYTES, walPages }
}
