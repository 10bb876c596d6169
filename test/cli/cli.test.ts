/** The CLI skeleton: --version, complete --help for every command, exit codes and one-line errors. */
import { describe, expect, test } from 'bun:test'
import type { CommandDef } from 'citty'
import { rootCommand } from '../../src/cli/main.ts'
import pkg from '../../package.json' with { type: 'json' }

const ROOT = new URL('../..', import.meta.url).pathname
const BUN = process.execPath

function cli(...args: string[]) {
  const r = Bun.spawnSync([BUN, 'src/main.ts', ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1' },
  })
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() }
}

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === 'function' ? await (v as () => T | Promise<T>)() : await v
}

/** Every command path in the tree, e.g. ['bench', 'kernels']. */
async function commandPaths(cmd: CommandDef, prefix: string[] = []): Promise<{ path: string[]; cmd: CommandDef }[]> {
  const out = [{ path: prefix, cmd }]
  const subs = (await resolve(cmd.subCommands)) as Record<string, CommandDef | (() => Promise<CommandDef>)> | undefined
  for (const [name, sub] of Object.entries(subs ?? {}))
    out.push(...(await commandPaths(await resolve(sub), [...prefix, name])))
  return out
}

describe('dbcluster CLI', () => {
  test('--version prints the package version', () => {
    const r = cli('--version')
    expect(r.code).toBe(0)
    expect(r.out.trim()).toBe(pkg.version)
  })

  test('every command has a description, every argument a description, and --help renders them', async () => {
    const paths = await commandPaths(rootCommand as unknown as CommandDef)
    expect(paths.map((p) => p.path.join(' '))).toContain('bench kernels')
    for (const { path, cmd } of paths) {
      const meta = await resolve(cmd.meta)
      expect(meta?.description, `description of '${path.join(' ')}'`).toBeTruthy()
      for (const [name, arg] of Object.entries((await resolve(cmd.args)) ?? {})) {
        expect((arg as { description?: string }).description, `--${name} of '${path.join(' ')}'`).toBeTruthy()
      }
    }
    const r = cli('bench', 'kernels', '--help')
    expect(r.code).toBe(0)
    expect(r.out).toContain('--json')
    expect(r.out).toContain('roofline')
  })

  test('an unknown command exits 2 with one clear line', () => {
    const r = cli('frobnicate', '--help')
    expect(r.code).toBe(2)
    expect(r.err).toContain("unknown command 'frobnicate'")
    expect(r.err).not.toContain('    at ')
    const r2 = cli('frobnicate')
    expect(r2.code).toBe(2)
  })

  test('a bad argument value exits 2 with a hint and no stack trace', () => {
    const r = cli('bench', 'kernels', '--dtypes', 'q7')
    expect(r.code).toBe(2)
    expect(r.err).toContain("unknown dtype 'q7'")
    expect(r.err.trim().split('\n').length).toBe(1)
  })
})
