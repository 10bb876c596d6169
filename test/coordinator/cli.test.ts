/** The coordinator commands as an operator runs them: help, argument errors, a refused key file, token output. */
import { describe, expect, test } from 'bun:test'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { attest, attester, createToken, identity, register, startCoordinator, tempDir } from './support.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const run = (args: string[]) => {
  const p = Bun.spawnSync([process.execPath, 'src/main.ts', ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NODE_ENV: 'development', NO_COLOR: '1' },
  })
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() }
}

describe('dbcluster coordinator', () => {
  test('--help lists every flag with its description and the token subcommand', () => {
    const { code, out } = run(['coordinator', '--help'])
    expect(code).toBe(0)
    for (const flag of ['--host', '--port', '--db', '--key', '--offline-after', '--attestation-max-age'])
      expect(out).toContain(flag)
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

  test("token revoke (one token, or an account's) and provider forget work while the coordinator runs", async () => {
    const db = join(tempDir(), 'c.db')
    const [keep, drop, other] = [
      await createToken(db, 'ops'),
      await createToken(db, 'ops'),
      await createToken(db, 'lab'),
    ]
    const coord = await startCoordinator(db)
    try {
      const get = (token: string, path = '/v1/account/providers') =>
        fetch(`${coord.url}${path}`, { headers: { authorization: `Bearer ${token}` } })
      expect((await get(drop)).status).toBe(200)
      const revoked = run(['coordinator', 'token', 'revoke', '--token', drop, '--db', db])
      expect([revoked.code, revoked.out.includes('token revoked')]).toEqual([0, true])
      expect((await get(drop)).status).toBe(401)
      expect((await get(keep)).status).toBe(200)
      expect(run(['coordinator', 'token', 'revoke', '--token', drop, '--db', db]).code).toBe(2) // already gone
      expect(run(['coordinator', 'token', 'revoke', '--db', db]).out).toContain('give exactly one of --token')

      // a machine whose key really changed: untrusted until the operator forgets it, then it registers afresh
      const first = await register(coord.url, other, {
        rdma_enabled: false,
        attestation: attester(identity(41), 'MAC-1', false),
      })
      expect(first.reply).toMatchObject({ serial: 'MAC-1', attested: true, status: 'online' })
      first.socket.ws.close()
      const changed = await register(coord.url, other, {
        rdma_enabled: false,
        attestation: attester(identity(42), 'MAC-1', false),
      })
      expect(changed.reply).toMatchObject({ serial: 'MAC-1', status: 'untrusted' })
      changed.socket.ws.close()
      const forgot = run(['coordinator', 'provider', 'forget', 'MAC-1', '--db', db])
      expect([forgot.code, forgot.out.includes('forgot MAC-1')]).toEqual([0, true])
      expect((await get(other, '/v1/cluster/peer-key?serial=MAC-1')).status).toBe(404)
      const again = await register(coord.url, other, {
        rdma_enabled: false,
        attestation: attester(identity(42), 'MAC-1', false),
      })
      expect(again.reply).toMatchObject({ serial: 'MAC-1', attested: true, status: 'online' })
      again.socket.ws.close()
      expect(run(['coordinator', 'provider', 'forget', 'NOPE', '--db', db]).code).toBe(2)

      const all = run(['coordinator', 'token', 'revoke', '--account', 'lab', '--db', db])
      expect([all.code, all.out.includes("1 token(s) of account 'lab' revoked")]).toEqual([0, true])
      expect((await get(other)).status).toBe(401)
    } finally {
      await coord.stop()
    }
  }, 60_000)
})
