/** The coordinator commands as an operator runs them: help, argument errors, a refused key file, token output. */
import { describe, expect, test } from 'bun:test'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createToken, tempDir } from './support.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const run = (args: string[]) => {
  const p = Bun.spawnSync([process.execPath, 'src/main.ts', ...args], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, NODE_ENV: 'development', NO_COLOR: '1' } })
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() }
}

describe('dbcluster coordinator', () => {
  test('--help lists every flag with its description and the token subcommand', () => {
    const { code, out } = run(['coordinator', '--help'])
    expect(code).toBe(0)
    for (const flag of ['--host', '--port', '--db', '--key', '--offline-after', '--attestation-max-age']) expect(out).toContain(flag)
    expect(out).toContain('Seconds without a heartbeat before a provider is marked offline')
    expect(out).toContain('token')
  })

  test('bad arguments exit 2 with the reason', () => {
    const dir = tempDir()
    const port = run(['coordinator', '--port', '70000', '--db', join(dir, 'c.db')])
    expect([port.code, port.out.includes("--port must be 0..65535, got '70000'")]).toEqual([2, true])
    const account = run(['coordinator', 'token', 'create', '--account', 'bad name!', '--db', join(dir, 'c.db')])
    expect([account.code, account.out.includes("bad account name 'bad name!'")]).toEqual([2, true])
  })

  test('a readable signing key file stops the start with exit 1 and the chmod to run', () => {
    const dir = tempDir()
    const key = join(dir, 'c.key')
    writeFileSync(key, '{}')
    chmodSync(key, 0o644)
    const r = run(['coordinator', '--port', '0', '--db', join(dir, 'c.db'), '--key', key])
    expect(r.code).toBe(1)
    expect(r.out).toContain(`${key} is readable by group or others (mode 644) — run 'chmod 600 ${key}'`)
  })

  test('token create makes a new token per call for the same account', async () => {
    const db = join(tempDir(), 'c.db')
    const [a, b] = [await createToken(db, 'ops'), await createToken(db, 'ops')]
    expect(a).toMatch(/^dbc_/)
    expect(b).not.toBe(a)
  })
})
