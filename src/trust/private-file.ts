/** Files that hold secrets or trust decisions (key files, pin stores): created 0600, refused when group or others can read. */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { TrustError } from './errors.ts'

export function readPrivateFile(path: string): string {
  const mode = statSync(path).mode & 0o777
  if (mode & 0o077) {
    throw new TrustError('E_KEY_PERMISSIONS', `${path} is readable by group or others (mode ${mode.toString(8)})`, `run 'chmod 600 ${path}'`)
  }
  return readFileSync(path, 'utf8')
}

/** Writes atomically (temp file + rename) with mode 0600, creating the folder (0700) when needed. */
export function writePrivateFile(path: string, content: string): void {
  const dir = dirname(path)
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, content, { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}
