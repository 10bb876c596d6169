/** `dbcluster identity show|init` as a user runs them: a real process, a temporary DBCLUSTER_HOME. */
import { describe, expect, test } from 'bun:test'
import { chmodSync, existsSync, mkdtempSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { verifyAttestation } from '../../src/trust/attestation.ts'
import { fingerprint } from '../../src/trust/identity.ts'
import { runCli } from '../support/run-cli.ts'

// consola's info lines stay quiet here (NODE_ENV=test, as bun test sets it): stdout must be the JSON alone
const cli = (args: string[], home: string) => runCli(args, home, { NODE_ENV: 'test' })

describe('identity CLI', () => {
  test('show --json creates the key (0600) under DBCLUSTER_HOME and prints a verifiable attestation', async () => {
    const home = mkdtempSync(join(tmpdir(), 'dbc-home-'))
    const { stdout, code } = await cli(['identity', 'show', '--json'], home)
    expect(code).toBe(0)
    const shown = JSON.parse(stdout)
    expect(shown.key_file).toBe(join(home, 'identity.key'))
    expect(statSync(shown.key_file).mode & 0o777).toBe(0o600)
    expect(shown.key_kind).toBe('software')
    expect(shown.fingerprint).toBe(fingerprint(new Uint8Array(Buffer.from(shown.public_key, 'base64'))))
    // the nonce an MDM requests the device attestation with: SHA-256 of the compressed key (docs/trust.md)
    expect(shown.mda_nonce).toBe(
      new Bun.CryptoHasher('sha256').update(Buffer.from(shown.public_key, 'base64')).digest('base64'),
    )
    const verdict = verifyAttestation(shown.attestation, { maxAgeMs: 60_000 })
    expect(verdict).toMatchObject({
      ok: true,
      body: { publicKey: shown.public_key, keyKind: 'software', rdmaEnabled: false },
    })
    // the same key next time
    const again = JSON.parse((await cli(['identity', 'show', '--json'], home)).stdout)
    expect(again.public_key).toBe(shown.public_key)
  })

  test('show --rdma on a machine without RDMA says why on stderr and attests rdmaEnabled=false', async () => {
    if (
      process.platform !== 'linux' ||
      (existsSync('/sys/class/infiniband') && readdirSync('/sys/class/infiniband').length > 0)
    ) {
      return console.log('skipped: needs a Linux machine without RDMA devices')
    }
    const home = mkdtempSync(join(tmpdir(), 'dbc-home-'))
    const { stdout, stderr, code } = await cli(
      ['identity', 'show', '--json', '--rdma', '--key-file', join(home, 'k.key')],
      home,
    )
    expect(code).toBe(0)
    expect(stderr).toContain('RDMA requested but not available: no RDMA device under /sys/class/infiniband')
    expect(JSON.parse(stdout).attestation.body.rdmaEnabled).toBe(false)
  })

  test('a key file readable by others is refused with the chmod to run, exit code 1', async () => {
    const home = mkdtempSync(join(tmpdir(), 'dbc-home-'))
    expect((await cli(['identity', 'init'], home)).code).toBe(0)
    const key = join(home, 'identity.key')
    chmodSync(key, 0o604)
    const { stderr, code } = await cli(['identity', 'show'], home)
    expect(code).toBe(1)
    expect(stderr).toContain(`chmod 600 ${key}`)
  })
})
