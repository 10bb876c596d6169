/** `bun build --compile` for one target, embedding the compute shim given (or none): the one compile step behind
 * scripts/build-binary.sh and scripts/release.sh. src/tensor/native.ts imports build/libdbc.so as a file; this plugin points
 * that import at the target's shim, or at an empty path when this machine cannot build it (a darwin shim on Linux), in
 * which case the binary looks for libdbc.so beside itself (docs/release.md). On a Mac, macOS binaries are re-signed ad hoc.
 *   bun scripts/compile-binary.ts --outfile FILE [--target bun-darwin-arm64] [--shim PATH | --no-shim] */
import type { BunPlugin } from 'bun'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: { outfile: { type: 'string' }, target: { type: 'string' }, shim: { type: 'string' }, 'no-shim': { type: 'boolean', default: false } },
})
const fail = (message: string): never => {
  console.error(`[compile-binary] ${message}`)
  process.exit(2)
}
const outfile = values.outfile ?? fail('--outfile FILE is required')
const shim = values['no-shim'] ? '' : resolve(values.shim ?? 'build/libdbc.so')
if (shim && !existsSync(shim)) fail(`no shim at ${shim}: build it with 'bash scripts/build-shim.sh', or pass --no-shim`)

const targetShim: BunPlugin = {
  name: 'target-shim',
  setup(build) {
    build.onResolve({ filter: /(^|\/)build\/libdbc\.so$/ }, () => (shim ? { path: shim } : { path: 'no-shim', namespace: 'dbc-no-shim' }))
    build.onLoad({ filter: /.*/, namespace: 'dbc-no-shim' }, () => ({ contents: 'export default ""', loader: 'js' }))
  },
}

const result = await Bun.build({
  // the compute thread's entry (src/compute/stage-thread.ts starts it as a Worker) is bundled beside the CLI's
  entrypoints: [resolve(import.meta.dir, '../src/main.ts'), resolve(import.meta.dir, '../src/compute/stage-worker.ts')],
  compile: values.target ? { target: values.target as Bun.Build.CompileTarget, outfile } : { outfile },
  minify: { syntax: true },
  plugins: [targetShim],
})
if (!result.success) fail(`bun build failed:\n${result.logs.map(String).join('\n')}`)

// Apple Silicon kills a binary whose signature does not match its bytes, and bun's own ad-hoc signature has not always
// matched (oven-sh/bun#39764): on a Mac, re-sign a macOS binary ad hoc. Elsewhere there is no codesign (docs/release.md).
const darwinTarget = values.target ? values.target.startsWith('bun-darwin') : process.platform === 'darwin'
if (darwinTarget && process.platform === 'darwin') {
  const sign = (args: string[]) => Bun.spawnSync(['codesign', ...args, outfile], { stderr: 'pipe' })
  if (!sign(['--force', '--sign', '-']).success) {
    sign(['--remove-signature'])
    const again = sign(['--sign', '-'])
    if (!again.success) fail(`codesign failed: ${again.stderr.toString()}`)
  }
}
