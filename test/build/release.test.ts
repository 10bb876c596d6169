/** scripts/release.sh on this machine: the host binary embeds its portable shim and runs anywhere, the other platform's
 * binary is cross-compiled (or the script says why not), what was skipped is written down, and SHA256SUMS matches. */
import { expect, test } from 'bun:test'
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../package.json' with { type: 'json' }
import { expectKernelsRun, runBinary } from '../support/run-binary.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const onLinuxX64 = process.platform === 'linux' && process.arch === 'x64'
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')

test.skipIf(!onLinuxX64)(
  `release.sh builds dist/dbcluster-linux-x64 and dbcluster-darwin-arm64 with SHA256SUMS${onLinuxX64 ? '' : ' (skipped: this test expects a linux-x64 host)'}`,
  () => {
    const out = mkdtempSync(join(tmpdir(), 'dbc-release-'))
    try {
      const r = Bun.spawnSync(['bash', 'scripts/release.sh', out], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
      const log = r.stdout.toString() + r.stderr.toString()
      expect(r.exitCode, log).toBe(0)

      const linux = join(out, 'dbcluster-linux-x64')
      const version = runBinary(linux, ['--version'])
      expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n` })
      expectKernelsRun(linux)

      // The darwin binary: a Mach-O arm64 executable, or a clear line saying bun could not cross-compile here.
      const darwinBuilt = !/SKIPPED .*dbcluster-darwin-arm64: bun could not cross-compile/.test(log)
      if (darwinBuilt) {
        const header = readFileSync(join(out, 'dbcluster-darwin-arm64')).subarray(0, 8)
        expect([...header]).toEqual([0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01]) // MH_MAGIC_64, CPU_TYPE_ARM64
        expect(log).toContain('SKIPPED the darwin-arm64 compute shim')
      }
      expect(log).toContain('SKIPPED libdbc_macos.dylib: the Swift bridge builds only on a Mac')

      const info = readFileSync(join(out, 'BUILD-INFO.txt'), 'utf8')
      expect(info).toContain(`dbcluster ${pkg.version} release, built on linux-x64`)
      expect(info).toContain('dbcluster-linux-x64: Bun runtime + TypeScript + portable compute shim (embedded)')
      expect(info).toContain(
        darwinBuilt
          ? 'dbcluster-darwin-arm64: Bun runtime + TypeScript, cross-compiled; compute shim NOT embedded'
          : 'dbcluster-darwin-arm64: SKIPPED',
      )

      const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(/\s+/))
      expect(sums.map(([, name]) => name)).toEqual(
        darwinBuilt ? ['dbcluster-linux-x64', 'dbcluster-darwin-arm64'] : ['dbcluster-linux-x64'],
      )
      for (const [sum, name] of sums) expect([name, sum]).toEqual([name, sha256(join(out, name!))])
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  },
  120_000,
)

test('a binary built without its shim says how to supply one, and uses libdbc.so beside it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-noshim-'))
  try {
    const binary = join(dir, 'dbcluster')
    const build = Bun.spawnSync(
      ['node_modules/.bin/bun', 'scripts/compile-binary.ts', '--no-shim', '--outfile', binary],
      { cwd: ROOT, stderr: 'pipe' },
    )
    expect(build.exitCode, build.stderr.toString()).toBe(0)
    // Commands that need no compute still run.
    expect(runBinary(binary, ['--version'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` })
    const refused = runBinary(binary, [
      'bench',
      'kernels',
      '--json',
      '--dtypes',
      'q4',
      '--batches',
      '1',
      '--shapes',
      '256x256',
    ])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(
      `this binary was built without its compute shim (cross-compiled), and there is no ${join(dir, 'libdbc.so')}`,
    )
    expect(refused.stderr).toContain('put the libdbc.so built there beside this binary')
    if (!Bun.spawnSync(['bash', 'scripts/build-shim.sh'], { cwd: ROOT }).success)
      throw new Error('build-shim.sh failed')
    copyFileSync(join(ROOT, 'build/libdbc.so'), join(dir, 'libdbc.so'))
    expectKernelsRun(binary)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 60_000)
