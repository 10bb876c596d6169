/** `dbcluster trust list|pin|forget` as a user runs them: real processes, a temporary DBCLUSTER_HOME with the pin file
 * store; --from-peer against a real listening link port, including one whose signature does not match its key. */
import { afterAll, describe, expect, test } from 'bun:test'
import { p256 } from '@noble/curves/nist.js'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connectLink, listenLinks, type SealedLink } from '../../src/link/tcp-link.ts'
import { fingerprint, type Identity } from '../../src/trust/identity.ts'
import { loadSoftwareIdentity } from '../../src/trust/identity-software.ts'
import { authorizeByPins, FilePinStore } from '../../src/trust/pinned-keys.ts'
import { pins, testIdentity } from '../support/identities.ts'
import { runCli } from '../support/run-cli.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const [bob, carol] = [testIdentity(2), testIdentity(3)]
const listeners: { stop(force?: boolean): void }[] = []
const links: SealedLink[] = []
afterAll(() => {
  links.forEach((l) => l.close())
  listeners.forEach((l) => l.stop(true))
})

const newHome = () => mkdtempSync(join(tmpdir(), 'dbc-trust-'))

const cli = (args: string[], home: string) => runCli(args, home)

const listed = async (home: string) => JSON.parse((await cli(['trust', 'list', '--json'], home)).stdout)

describe('trust pin, list, forget on the pin file', () => {
  test('round trip: pin, list (table and JSON), re-pin refused, --replace, forget, forget unknown', async () => {
    const home = newHome()
    expect((await cli(['trust', 'list'], home)).all).toContain(`no pins in ${join(home, 'pins.json')}`)

    const pinned = await cli(['trust', 'pin', '--serial', 'bob', '--key', b64(bob.publicKey), '--yes'], home)
    expect(pinned.code, pinned.all).toBe(0)
    expect(pinned.stdout).toContain(`serial       bob\nfingerprint  ${fingerprint(bob.publicKey)}`)
    expect(statSync(join(home, 'pins.json')).mode & 0o777).toBe(0o600)

    const table = await cli(['trust', 'list'], home)
    expect(table.stdout).toContain(`| bob | ${fingerprint(bob.publicKey)} | manual (file) |`)
    expect(table.stdout).toContain(`| never | ${b64(bob.publicKey)} |`)
    const [row, ...rest] = await listed(home)
    expect(rest).toEqual([])
    expect(row).toMatchObject({
      serial: 'bob',
      fingerprint: fingerprint(bob.publicKey),
      public_key: b64(bob.publicKey),
      key_kind: 'software',
      source: 'manual',
      store: 'file',
      last_seen_at: null,
    })
    expect(Date.parse(row.pinned_at)).toBeGreaterThan(Date.now() - 60_000)

    // the same key again changes nothing; a different key is refused unless --replace
    const again = await cli(['trust', 'pin', '--serial', 'bob', '--key', b64(bob.publicKey)], home)
    expect(again.code, again.all).toBe(0)
    expect(again.all).toContain('bob is already pinned to this key')
    const other = await cli(['trust', 'pin', '--serial', 'bob', '--key', b64(carol.publicKey), '--yes'], home)
    expect(other.code).toBe(1)
    expect(other.stderr).toContain(
      `bob is already pinned to a different key (fingerprint ${fingerprint(bob.publicKey)}, manual,`,
    )
    expect(other.stderr).toContain('pass --replace')
    expect((await listed(home))[0].public_key).toBe(b64(bob.publicKey))
    const replaced = await cli(
      ['trust', 'pin', '--serial', 'bob', '--key', b64(carol.publicKey), '--yes', '--replace'],
      home,
    )
    expect(replaced.code, replaced.all).toBe(0)
    expect(replaced.stdout).toContain(`replaces     ${fingerprint(bob.publicKey)} (manual,`)
    expect((await listed(home))[0].public_key).toBe(b64(carol.publicKey))

    const forgot = await cli(['trust', 'forget', 'bob'], home)
    expect(forgot.code, forgot.all).toBe(0)
    expect(forgot.all).toContain(`forgot bob (${fingerprint(carol.publicKey)})`)
    expect(await listed(home)).toEqual([])
    const unknown = await cli(['trust', 'forget', 'bob'], home)
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain(`no pin for 'bob' in ${join(home, 'pins.json')}`)
    expect(unknown.stderr).toContain("run 'dbcluster trust list'")
  })

  test('an uncompressed key is pinned in its compressed form; keys that are not P-256 keys are refused by name', async () => {
    const home = newHome()
    const uncompressed = p256.getPublicKey(new Uint8Array(32).fill(2), false)
    expect(uncompressed.byteLength).toBe(65)
    const ok = await cli(['trust', 'pin', '--serial', 'bob', '--key', b64(uncompressed), '--yes'], home)
    expect(ok.code, ok.all).toBe(0)
    expect((await listed(home))[0].public_key).toBe(b64(bob.publicKey))

    const offCurve = new Uint8Array(33).fill(7)
    offCurve[0] = 2
    for (const [key, says] of [
      ['not base64!', "--key 'not base64!' is not base64"],
      [b64(new Uint8Array(20)), '--key is 20 bytes; a P-256 public key is 33 (compressed) or 65 (uncompressed)'],
      [b64(offCurve), '--key is not a point on the P-256 curve'],
    ] as const) {
      const r = await cli(['trust', 'pin', '--serial', 'carol', '--key', key, '--yes'], home)
      expect(r.code, r.all).toBe(2)
      expect(r.stderr).toContain(says)
    }
    const noSerial = await cli(['trust', 'pin', '--key', b64(bob.publicKey), '--yes'], home)
    expect(noSerial.code).toBe(2)
    expect(noSerial.stderr).toContain('--key needs --serial SERIAL')
    const neither = await cli(['trust', 'pin', '--serial', 'bob', '--yes'], home)
    expect(neither.code).toBe(2)
    expect(neither.stderr).toContain("give the peer's key: --key BASE64")
    const both = await cli(['trust', 'pin', '--key', b64(bob.publicKey), '--from-peer', '127.0.0.1:1'], home)
    expect(both.stderr).toContain('give --key or --from-peer, not both')
    expect(Object.keys(await listed(home))).toHaveLength(1)
  })

  test('without a terminal and without --yes nothing is pinned, and the refusal says to pass --yes', async () => {
    const home = newHome()
    const r = await cli(['trust', 'pin', '--serial', 'bob', '--key', b64(bob.publicKey)], home)
    expect(r.code).toBe(2)
    expect(r.stdout).toContain(`fingerprint  ${fingerprint(bob.publicKey)}`) // shown, to compare before rerunning
    expect(r.stderr).toContain('no terminal to confirm on')
    expect(r.stderr).toContain('then pass --yes')
    expect(await listed(home)).toEqual([])
  })

  test('a pin file written before last-seen existed lists as never seen; a handshake that accepts the pin stamps it', async () => {
    const home = newHome()
    const path = join(home, 'pins.json')
    writeFileSync(
      path,
      JSON.stringify({
        bob: { publicKey: b64(bob.publicKey), keyKind: 'software', source: 'coordinator', pinnedAt: 1 },
      }),
      { mode: 0o600 },
    )
    expect(await listed(home)).toEqual([
      expect.objectContaining({
        serial: 'bob',
        source: 'coordinator',
        pinned_at: new Date(1).toISOString(),
        last_seen_at: null,
      }),
    ])
    // a node of this home (alice) accepts bob over a real link; its authorizer is the one serve uses
    const alice = testIdentity(1)
    const listener = listenLinks(
      '127.0.0.1',
      0,
      { identity: alice, serial: 'alice', clusterId: 'c', authorize: authorizeByPins(new FilePinStore(path)) },
      (l) => links.push(l),
    )
    listeners.push(listener)
    const before = Date.now()
    links.push(
      await connectLink('127.0.0.1', listener.port, {
        identity: bob,
        serial: 'bob',
        clusterId: 'c',
        authorize: pins({ alice }),
      }),
    )
    const [row] = await listed(home)
    expect(Date.parse(row.last_seen_at)).toBeGreaterThanOrEqual(before - 1000)
    expect((await cli(['trust', 'list'], home)).stdout).not.toContain('never')
  })
})

describe('trust pin --from-peer', () => {
  /** A listening node (serial `node-p`) that accepts `accepts`; `sign` lets a test make it sign with another key. */
  function peerNode(
    identity: Identity,
    accepts: Record<string, Identity>,
    cipher: 'aes-256-gcm' | 'chacha20-poly1305' = 'aes-256-gcm',
  ): number {
    const listener = listenLinks(
      '127.0.0.1',
      0,
      { identity, serial: 'node-p', clusterId: 'dbcluster', authorize: pins(accepts), cipher },
      (l) => links.push(l),
    )
    listeners.push(listener)
    return listener.port
  }
  /** A state folder with its own key, as this machine would have. */
  function machine(): { home: string; identity: Identity } {
    const home = newHome()
    return { home, identity: loadSoftwareIdentity(join(home, 'identity.key')).identity }
  }

  test('pins the key the peer proves in the handshake, and the peer logs why no link was made', async () => {
    const me = machine()
    const port = peerNode(bob, { 'node-me': me.identity })
    const r = await cli(
      ['trust', 'pin', '--from-peer', `127.0.0.1:${port}`, '--node-name', 'node-me', '--yes'],
      me.home,
    )
    expect(r.code, r.all).toBe(0)
    expect(r.all).toContain(`127.0.0.1:${port} proved it holds this key`)
    expect(r.stdout).toContain(`serial       node-p\nfingerprint  ${fingerprint(bob.publicKey)}`)
    expect(await listed(me.home)).toEqual([
      expect.objectContaining({ serial: 'node-p', public_key: b64(bob.publicKey), source: 'manual' }),
    ])
    // --serial is checked against what the peer presents
    const wrong = await cli(
      ['trust', 'pin', '--from-peer', `127.0.0.1:${port}`, '--serial', 'node-q', '--node-name', 'node-me', '--yes'],
      me.home,
    )
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain(`127.0.0.1:${port} presents serial 'node-p', not 'node-q'`)
  })

  test('a peer sealing with ChaCha20-Poly1305 is read with its --cipher, and refused naming both without it', async () => {
    const me = machine()
    const port = peerNode(bob, { 'node-me': me.identity }, 'chacha20-poly1305')
    const base = ['trust', 'pin', '--from-peer', `127.0.0.1:${port}`, '--node-name', 'node-me', '--yes']
    const without = await cli(base, me.home)
    expect(without.code).toBe(1)
    expect(without.stderr).toContain('chacha20-poly1305')
    expect(without.stderr).toContain('aes-256-gcm')
    const r = await cli([...base, '--cipher', 'chacha20-poly1305'], me.home)
    expect(r.code, r.all).toBe(0)
    expect(await listed(me.home)).toEqual([
      expect.objectContaining({ serial: 'node-p', public_key: b64(bob.publicKey) }),
    ])
  })

  test('a peer that does not trust this machine refuses, and the error says what to do on each side', async () => {
    const me = machine()
    const port = peerNode(bob, {})
    const r = await cli(
      ['trust', 'pin', '--from-peer', `127.0.0.1:${port}`, '--node-name', 'node-me', '--yes'],
      me.home,
    )
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`127.0.0.1:${port} refused the handshake: E_PEER_NOT_PINNED`)
    expect(r.stderr).toContain('pin this machine (node-me) on the peer first')
    expect(await listed(me.home)).toEqual([])
  })

  test('a peer presenting a key it cannot sign for is refused (its signature does not verify), nothing pinned', async () => {
    const me = machine()
    const impostor: Identity = { kind: 'software', publicKey: bob.publicKey, sign: carol.sign }
    const port = peerNode(impostor, { 'node-me': me.identity })
    const r = await cli(
      ['trust', 'pin', '--from-peer', `127.0.0.1:${port}`, '--node-name', 'node-me', '--yes'],
      me.home,
    )
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("peer node-p's signature over the handshake does not verify")
    expect(await listed(me.home)).toEqual([])
  })

  test('nothing listening: a clear error naming the address', async () => {
    const me = machine()
    const r = await cli(['trust', 'pin', '--from-peer', '127.0.0.1:1', '--yes'], me.home)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('cannot reach 127.0.0.1:1')
    expect((await cli(['trust', 'pin', '--from-peer', 'nowhere', '--yes'], me.home)).stderr).toContain(
      "--from-peer must be HOST:PORT (the peer's link port), got 'nowhere'",
    )
  })
})

test('help lists the trust commands and their flags', async () => {
  const home = newHome()
  expect((await cli(['trust', '--help'], home)).stdout).toMatch(/list[\s\S]*pin[\s\S]*forget/)
  const help = (await cli(['trust', 'pin', '--help'], home)).stdout
  for (const flag of ['--serial', '--key', '--from-peer', '--yes', '--replace', '--cluster-id', '--node-name'])
    expect(help).toContain(flag)
  expect(readFileSync(join(ROOT, 'docs/cli.md'), 'utf8')).toContain('dbcluster trust pin')
})
