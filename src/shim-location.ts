/** Where the C shim (libdbc.so) is: one answer for every binding file that opens it (src/tensor/native.ts,
 * src/tensor-parallel/native-socket.ts, src/link/native-aead.ts), which sit in different layers. */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import shimPath from '../build/libdbc.so' with { type: 'file' }
import { DbcError } from './errors.ts'

/** The shim's path: DBCLUSTER_SHIM, else the copy embedded in the binary (or the source tree's build/), else libdbc.so
 * beside the executable, for a release cross-compiled where its platform's shim could not be built (docs/release.md). */
export function shimLocation(): string {
  if (process.env.DBCLUSTER_SHIM) return process.env.DBCLUSTER_SHIM
  if (shimPath) return shimPath
  const beside = join(dirname(process.execPath), 'libdbc.so')
  if (existsSync(beside)) return beside
  throw new DbcError(
    'E_SHIM_MISSING',
    `this binary was built without its compute shim (cross-compiled), and there is no ${beside}`,
    'use the release built on this platform (docs/release.md), put the libdbc.so built there beside this binary, or set DBCLUSTER_SHIM',
  )
}
