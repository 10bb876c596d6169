/** Files that hold secrets or trust decisions (key files, pin stores): created 0600, refused when group or others can read. */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { TrustError } from './errors.ts'

export function readPrivateFile(path: string): string {
  checkFolder(dirname(path))
  const mode = statSync(path).mode & 0o777
  if (mode & 0o077) {
    throw new TrustError(
      'E_KEY_PERMISSIONS',
      `${path} is readable by group or others (mode ${mode.toString(8)})`,
      `run 'chmod 600 ${path}'`,
    )
  }
  return readFileSync(path, 'utf8')
}

/** The folder of a key or pin file: one that group or others may write lets another user replace the file (a key of
 * their choosing, pins for their machines), whatever the file's own mode. */
function checkFolder(dir: string): void {
  const mode = statSync(dir).mode & 0o777
  if (mode & 0o022) {
    throw new TrustError(
      'E_KEY_PERMISSIONS',
      `${dir} is writable by group or others (mode ${mode.toString(8)}): another user could replace the keys and pins in it`,
      `run 'chmod 700 ${dir}'`,
    )
  }
}

/** Writes atomically (temp file + rename) with mode 0600, creating the folder (0700) when needed. */
export function writePrivateFile(path: string, content: string): void {
  const dir = dirname(path)
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 })
  checkFolder(dir)
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, content, { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}
