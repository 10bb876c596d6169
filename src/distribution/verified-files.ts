/** What a stage already verified: each file's size, modification time and SHA-256 when it was last hashed, in a dotfile
 * beside the files. A file whose size and time are unchanged is not hashed again on the next start (re-reading hundreds
 * of gigabytes on every start is what this saves); any change — a copy, an edit, a truncation — hashes it again. The
 * stage trusts its own disk here, as the head trusts its manifest sidecar. */
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const VERIFIED_FILE = '.dbcluster-verified.json'

type Entry = { size: number; mtimeMs: number; sha256: string }

export class VerifiedFiles {
  readonly #entries: Record<string, Entry>
  #dirty = false

  private constructor(
    readonly dir: string,
    entries: Record<string, Entry>,
  ) {
    this.#entries = entries
  }

  static open(dir: string): VerifiedFiles {
    const path = join(dir, VERIFIED_FILE)
    let entries: Record<string, Entry> = {}
    if (existsSync(path)) {
      try {
        const raw = JSON.parse(readFileSync(path, 'utf8'))
        if (raw && typeof raw === 'object' && !Array.isArray(raw)) entries = raw
      } catch {
        // unreadable: every file is hashed again and the record rewritten
      }
    }
    return new VerifiedFiles(dir, entries)
  }

  /** True when `name` was verified with this SHA-256 and has not changed since. */
  has(name: string, sha256: string): boolean {
    const e = this.#entries[name]
    if (!e || e.sha256 !== sha256) return false
    const s = statSync(join(this.dir, name), { throwIfNoEntry: false })
    return s !== undefined && s.size === e.size && s.mtimeMs === e.mtimeMs
  }

  record(name: string, sha256: string): void {
    const s = statSync(join(this.dir, name))
    this.#entries[name] = { size: s.size, mtimeMs: s.mtimeMs, sha256 }
    this.#dirty = true
  }

  forget(name: string): void {
    if (!(name in this.#entries)) return
    delete this.#entries[name]
    this.#dirty = true
  }

  /** Writes the record when it changed. */
  save(): void {
    if (!this.#dirty) return
    this.#dirty = false
    const path = join(this.dir, VERIFIED_FILE)
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify(this.#entries))
      renameSync(`${path}.tmp`, path)
    } catch {
      // a read-only folder: files are hashed again next time, nothing else changes
    }
  }
}
