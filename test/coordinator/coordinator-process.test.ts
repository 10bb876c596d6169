/** A real `dbcluster coordinator` process on loopback: auth, validation, registration, the RDMA peer-list gate, rosters, cluster registration, restart. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { CoordinatorClient, type PeerPin, type PinStore } from '../../src/coordinator/client.ts'
import type { ProviderConnection } from '../../src/coordinator/provider-connection.ts'
import type { SignedRoster } from '../../src/coordinator/roster.ts'
import { verifySignature, type Identity } from '../../src/trust/identity.ts'
import { canonicalJson } from '../../src/trust/canonical-json.ts'
import {
  attest,
  attester,
  createToken,
  eventually,
  forge,
  identity,
  keyB64,
  openSocket,
  register,
  startCoordinator,
  tempDir,
  type CoordinatorProcess,
} from './support.ts'

const OFFLINE_AFTER_S = 2
const dir = tempDir()
const db = join(dir, 'coordinator.db')
let coord: CoordinatorProcess
const tokens: Record<string, string> = {}
const connections: ProviderConnection[] = []

class MapPins implements PinStore {
  readonly map = new Map<string, PeerPin>()
  get(serial: string) {
    return this.map.get(serial)
  }
  set(serial: string, pin: PeerPin) {
    this.map.set(serial, pin)
  }
}

const fast = { attempts: 2, baseMs: 20, maxMs: 50 }
const client = (account: string, pins?: PinStore) =>
  new CoordinatorClient({ url: coord.url, token: tokens[account]!, pins, retry: fast })

const get = (path: string, token?: string, init: RequestInit = {}) =>
  fetch(`${coord.url}${path}`, {
    ...init,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
  })
const postRoster = (token: string, body: string | ReadableStream, headers: Record<string, string> = {}) =>
  fetch(`${coord.url}/v1/cluster/roster`, {
    method: 'POST',
    body,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
  })

/** Registers with the real client (heartbeats every 200 ms) and returns the coordinator's answer. */
async function provide(account: string, id: Identity, serial: string, rdma: boolean, claimed = rdma) {
  const c = client(account).connectProvider({
    registration: async (challenge) => ({
      type: 'register',
      rdma_enabled: claimed,
      attestation: await attest(id, serial, rdma, undefined, challenge),
    }),
    heartbeatMs: 200,
  })
  connections.push(c)
  return { connection: c, reply: await c.registered }
}

const peerKey = async (account: string, serial: string) =>
  (await get(`/v1/cluster/peer-key?serial=${serial}`, tokens[account])).json() as Promise<Record<string, unknown>>
const rdmaPeers = (account: string) => get('/v1/cluster/rdma-peers', tokens[account])
const statusOf = async (account: string, serial: string) => {
  const r = (await (await get('/v1/account/providers', tokens[account])).json()) as {
    providers: { serial: string; status: string }[]
  }
  return r.providers.find((p) => p.serial === serial)?.status
}

// Identities: the peer pool (account "peers") and one caller account per gate scenario.
const ids = {
  peerOk: identity(1, 'secure-enclave'),
  replayed: identity(97),
  peerNoRdma: identity(2),
  peerUnattested: identity(3),
  peerForged: identity(4),
  peerOffline: identity(5),
  allowedA: identity(10),
  allowedB: identity(11, 'secure-enclave'),
  noRdma: identity(20),
  unattested: identity(21),
  untrusted: identity(22),
  untrustedNewKey: identity(23),
  offline: identity(24),
  silent: identity(25),
  stale: identity(26),
  mismatch: identity(27),
  squatter: identity(28),
}

beforeAll(async () => {
  const accounts = ['peers', 'nobody', 'noRdma', 'unattested', 'untrusted', 'offline', 'silent', 'allowed', 'other']
  // Tokens are made before the first start (creating the database) and once more while it runs (WAL lets both open it).
  tokens.peers = await createToken(db, 'peers')
  coord = await startCoordinator(db, ['--offline-after', String(OFFLINE_AFTER_S)])
  const rest = await Promise.all(accounts.slice(1).map((a) => createToken(db, a)))
  accounts.slice(1).forEach((a, i) => (tokens[a] = rest[i]!))
}, 40_000)

afterAll(async () => {
  await Promise.all(connections.map((c) => c.close()))
  if (coord?.proc.exitCode === null) await coord.stop()
})

describe('tokens', () => {
  test('token create prints a dbc_ token as its last line, and the database stores only its hash', async () => {
    expect(tokens.peers).toMatch(/^dbc_[A-Za-z0-9_-]{43}$/)
    const { Database } = await import('bun:sqlite')
    const raw = new Database(db, { readonly: true })
    const hashes = raw.query('SELECT hash FROM tokens').all() as { hash: string }[]
    raw.close()
    expect(hashes.length).toBe(9)
    expect(hashes.every((h) => /^[0-9a-f]{64}$/.test(h.hash))).toBe(true)
    expect(hashes.some((h) => h.hash.includes(tokens.peers!.slice(4, 20)))).toBe(false)
  })

  test('/health needs no token; every /v1 endpoint answers 401 without one, with a bad one, or with another scheme', async () => {
    const health = await get('/health')
    expect(health.status).toBe(200)
    expect(((await health.json()) as { status: string }).status).toBe('ok')
    for (const path of [
      '/v1/cluster/rdma-peers',
      '/v1/cluster/peer-key?serial=x',
      '/v1/coordinator',
      '/v1/account/providers',
      '/v1/provider/ws',
    ]) {
      for (const auth of [undefined, 'Bearer dbc_not-a-real-token', `Basic ${tokens.peers}`, 'Bearer']) {
        const r = await fetch(`${coord.url}${path}`, { headers: auth ? { authorization: auth } : {} })
        expect(r.status).toBe(401)
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('E_UNAUTHORIZED')
      }
    }
    const post = await fetch(`${coord.url}/v1/cluster/roster`, { method: 'POST', body: '{"members":["a"]}' })
    expect(post.status).toBe(401)
  })

  test('a socket without a token is refused before the upgrade', async () => {
    const ws = new WebSocket(`${coord.url.replace('http', 'ws')}/v1/provider/ws`)
    const outcome = await new Promise<string>((r) => {
      ws.onopen = () => r('open')
      ws.onerror = () => r('error')
    })
    expect(outcome).toBe('error')
  })
})

describe('registration over the provider socket', () => {
  test('a good attestation: attested, online, software trust for a self-signed Secure Enclave claim, signed rdma kept; peer-key serves the attested key', async () => {
    const { reply } = await provide('peers', ids.peerOk, 'PEER-OK', true)
    expect(reply).toMatchObject({
      type: 'registered',
      serial: 'PEER-OK',
      kind: 'machine',
      status: 'online',
      attested: true,
      trust_level: 'software',
      rdma_enabled: true,
      reason: 'claims a Secure Enclave key, but no Apple managed device attestation (MDA) was verified: software trust',
      mda_verified: false,
    })
    expect(reply.rdma_mismatch).toBeUndefined()
    // a Secure Enclave claim in a self-signed attestation is software trust, and the answer says why
    expect(await peerKey('peers', 'PEER-OK')).toEqual({
      serial: 'PEER-OK',
      public_key: keyB64(ids.peerOk),
      key_kind: 'secure-enclave',
      trust_level: 'software',
      attested: true,
      kind: 'machine',
      status: 'online',
      mda_verified: false,
      trust_reason:
        'claims a Secure Enclave key, but no Apple managed device attestation (MDA) was verified: software trust',
    })
  })

  test('a forged signature: recorded untrusted and not attested, trust none', async () => {
    const { reply, socket } = await register(coord.url, tokens.peers!, {
      rdma_enabled: true,
      attestation: await forge(ids.peerForged, 'PEER-FORGED', true),
    })
    expect(reply).toMatchObject({
      type: 'registered',
      serial: 'PEER-FORGED',
      status: 'untrusted',
      attested: false,
      trust_level: 'none',
    })
    expect(String(reply.reason)).toContain('signature does not verify')
    expect(await peerKey('peers', 'PEER-FORGED')).toMatchObject({
      attested: false,
      trust_level: 'none',
      status: 'untrusted',
    })
    socket.ws.close()
  })

  test('a stale timestamp: the signature is good but the blob is too old, so the provider is untrusted', async () => {
    const old = attester(ids.stale, 'STALE', true, Date.now() - 10 * 60_000)
    const { reply, socket } = await register(coord.url, tokens.other!, { rdma_enabled: true, attestation: old })
    expect(reply).toMatchObject({ serial: 'STALE', status: 'untrusted', attested: false, trust_level: 'none' })
    expect(String(reply.reason)).toContain('stale (600 s old)')
    socket.ws.close()
  })

  test("a replayed attestation (signed for another connection's challenge) is refused: untrusted, trust none", async () => {
    // a blob captured from one socket: valid signature, fresh, but its challenge is that socket's
    const first = await openSocket(coord.url, tokens.other!)
    const captured = await attest(ids.replayed, 'REPLAYED', true, undefined, first.challenge)
    first.ws.close()
    const { reply, socket } = await register(coord.url, tokens.other!, { rdma_enabled: true, attestation: captured })
    expect(reply).toMatchObject({ serial: 'REPLAYED', status: 'untrusted', attested: false, trust_level: 'none' })
    expect(String(reply.reason)).toContain("does not sign this connection's challenge")
    socket.ws.close()
  })

  test('a claimed rdma flag that contradicts the signed one: the signed value is kept and the mismatch logged', async () => {
    const { reply } = await provide('other', ids.mismatch, 'MISMATCH', false, true)
    expect(reply).toMatchObject({
      serial: 'MISMATCH',
      attested: true,
      status: 'online',
      rdma_enabled: false,
      rdma_mismatch: { claimed: true, attested: false },
    })
    await eventually(async () =>
      coord
        .output()
        .includes(
          'provider MISMATCH claimed rdma_enabled=true but its signed attestation says false; keeping the signed value',
        ),
    )
    const own = (await (await get('/v1/account/providers', tokens.other)).json()) as {
      providers: { serial: string; rdma_enabled: boolean }[]
    }
    expect(own.providers.find((p) => p.serial === 'MISMATCH')!.rdma_enabled).toBe(false)
  })

  test('another account cannot take over a proven serial, even with a valid attestation', async () => {
    const { reply, socket } = await register(coord.url, tokens.other!, {
      rdma_enabled: true,
      attestation: attester(ids.squatter, 'PEER-OK', true),
    })
    expect(reply).toEqual({
      type: 'error',
      code: 'E_SERIAL_TAKEN',
      message: expect.stringContaining('serial PEER-OK is registered to another account; this machine can prove'),
    })
    expect((await peerKey('peers', 'PEER-OK')).public_key).toBe(keyB64(ids.peerOk))
    socket.ws.close()
  })

  test('socket messages are validated: malformed JSON, unknown types, heartbeats before registering, bad keys', async () => {
    const s = await openSocket(coord.url, tokens.other!)
    s.send('{nope')
    expect(await s.next()).toEqual({ type: 'error', code: 'E_MALFORMED', message: 'body is not valid JSON' })
    s.send({ type: 'dance' })
    expect(await s.next()).toMatchObject({ type: 'error', code: 'E_INVALID' })
    s.send({ type: 'heartbeat' })
    expect(await s.next()).toEqual({ type: 'error', code: 'E_INVALID', message: 'register before sending heartbeats' })
    s.send({ type: 'register', rdma_enabled: 'yes', attestation: {} })
    expect(await s.next()).toEqual({
      type: 'error',
      code: 'E_INVALID',
      message: "register needs a boolean 'rdma_enabled'",
    })
    s.send({ type: 'register', rdma_enabled: true, serial: 'X1', public_key: 'AAAA', key_kind: 'software' })
    expect(await s.next()).toEqual({ type: 'error', code: 'E_INVALID', message: "'public_key' is not a P-256 point" })
    s.send({ type: 'register', rdma_enabled: true, attestation: { body: { serial: 'X2' }, signature: 'AA==' } })
    expect(await s.next()).toMatchObject({
      type: 'error',
      code: 'E_INVALID',
      message: 'attestation names no valid serial and P-256 public key',
    })
    s.ws.close()
  })

  test('an oversized socket message closes the socket with 1009', async () => {
    const s = await openSocket(coord.url, tokens.other!)
    s.send({
      type: 'register',
      rdma_enabled: true,
      serial: 'BIG',
      public_key: 'x'.repeat(70_000),
      key_kind: 'software',
    })
    expect((await s.closed).code).toBe(1009)
  })
})

describe('the RDMA peer-list gate', () => {
  let silentSocket: Awaited<ReturnType<typeof openSocket>>
  beforeAll(async () => {
    // The peer pool, owned by "peers": only PEER-OK is eligible (PEER-FORGED was registered above and is untrusted).
    await provide('peers', ids.peerNoRdma, 'PEER-NORDMA', false)
    const bare = await register(coord.url, tokens.peers!, {
      rdma_enabled: true,
      serial: 'PEER-UNATTESTED',
      public_key: keyB64(ids.peerUnattested),
      key_kind: 'software',
    })
    expect(bare.reply).toMatchObject({
      attested: false,
      status: 'online',
      rdma_enabled: true,
      reason: 'registered without an attestation',
    })
    const gone = await provide('peers', ids.peerOffline, 'PEER-OFFLINE', true)
    await gone.connection.close()
    // One caller account per scenario.
    await provide('noRdma', ids.noRdma, 'C-NORDMA', false)
    const unattested = await register(coord.url, tokens.unattested!, {
      rdma_enabled: true,
      serial: 'C-UNATTESTED',
      public_key: keyB64(ids.unattested),
      key_kind: 'software',
    })
    expect(unattested.reply.attested).toBe(false)
    // Untrusted but attested: a proven machine that comes back with a different key is never re-pinned silently.
    const first = await provide('untrusted', ids.untrusted, 'C-UNTRUSTED', true)
    await first.connection.close()
    const second = await provide('untrusted', ids.untrustedNewKey, 'C-UNTRUSTED', true)
    expect(second.reply).toMatchObject({ attested: true, status: 'untrusted', trust_level: 'none' })
    expect(String(second.reply.reason)).toContain('never re-pins silently')
    const offline = await provide('offline', ids.offline, 'C-OFFLINE', true)
    await offline.connection.close()
    silentSocket = (
      await register(coord.url, tokens.silent!, {
        rdma_enabled: true,
        attestation: attester(ids.silent, 'C-SILENT', true),
      })
    ).socket
    await provide('allowed', ids.allowedA, 'C-ALLOWED-A', true)
    await provide('allowed', ids.allowedB, 'C-ALLOWED-B', true)
  }, 20_000)

  const forbidden = async (account: string, reason: string) => {
    const r = await rdmaPeers(account)
    expect(r.status).toBe(403)
    expect(await r.json()).toEqual({ error: { code: 'E_FORBIDDEN', message: reason } })
  }

  test('caller with no provider: 403', () =>
    forbidden('nobody', 'this account owns no provider; register an attested, RDMA-enabled machine first'))
  test('caller whose only provider is not RDMA-enabled: 403', () =>
    forbidden('noRdma', 'this account owns no attested, online, RDMA-enabled machine'))
  test('caller whose only provider is not attested: 403', () =>
    forbidden('unattested', 'this account owns no attested, online, RDMA-enabled machine'))
  test('caller whose only provider is untrusted (attested, new key): 403', async () => {
    expect(await peerKey('untrusted', 'C-UNTRUSTED')).toMatchObject({
      public_key: keyB64(ids.untrusted),
      attested: true,
      status: 'untrusted',
      trust_level: 'none',
    })
    await forbidden('untrusted', 'this account owns no attested, online, RDMA-enabled machine')
  })
  test('caller whose only provider disconnected (offline): 403', async () => {
    expect(await statusOf('offline', 'C-OFFLINE')).toBe('offline')
    await forbidden('offline', 'this account owns no attested, online, RDMA-enabled machine')
  })
  test('caller whose only provider went silent (no heartbeats, socket still open): allowed, then 403 once it is marked offline', async () => {
    const r = await rdmaPeers('silent')
    expect(r.status).toBe(200)
    await eventually(async () => (await statusOf('silent', 'C-SILENT')) === 'offline', (OFFLINE_AFTER_S + 5) * 1000)
    await forbidden('silent', 'this account owns no attested, online, RDMA-enabled machine')
    silentSocket.ws.close()
  })

  test("the allowed case: only attested, online, RDMA-enabled peers of other accounts, never the caller's own", async () => {
    const r = await rdmaPeers('allowed')
    expect(r.status).toBe(200)
    // Excluded: PEER-NORDMA (no RDMA), PEER-UNATTESTED (not attested), PEER-FORGED and C-UNTRUSTED (untrusted),
    // PEER-OFFLINE and C-OFFLINE (offline), MISMATCH (signed rdma false), C-ALLOWED-A/B (the caller's own).
    expect(await r.json()).toEqual({
      peers: [
        {
          serial: 'PEER-OK',
          public_key: keyB64(ids.peerOk),
          key_kind: 'secure-enclave',
          trust_level: 'software',
          hostname: 'host-PEER-OK',
        },
      ],
    })
  })

  test("symmetrically, the peer pool's owner sees the allowed caller's two machines and not its own PEER-OK", async () => {
    const peers = await client('peers').rdmaPeers()
    expect(peers.map((p) => [p.serial, p.public_key, p.trust_level])).toEqual([
      ['C-ALLOWED-A', keyB64(ids.allowedA), 'software'],
      ['C-ALLOWED-B', keyB64(ids.allowedB), 'software'],
    ])
  })
})

describe('peer keys and the client', () => {
  test('peer-key: 400 without a serial, 422 for a malformed one, 404 for an unknown one; served while the peer is offline', async () => {
    const noSerial = await get('/v1/cluster/peer-key', tokens.nobody)
    expect([noSerial.status, await noSerial.json()]).toEqual([
      400,
      { error: { code: 'E_MALFORMED', message: "query parameter 'serial' is required" } },
    ])
    expect((await get('/v1/cluster/peer-key?serial=%20bad%20', tokens.nobody)).status).toBe(422)
    const unknown = await get('/v1/cluster/peer-key?serial=NOPE', tokens.nobody)
    expect([unknown.status, await unknown.json()]).toEqual([
      404,
      { error: { code: 'E_NOT_FOUND', message: 'no provider with serial NOPE in account nobody' } },
    ])
    // another account's provider answers exactly as an unknown serial does
    const foreign = await get('/v1/cluster/peer-key?serial=PEER-OK', tokens.nobody)
    expect([foreign.status, await foreign.json()]).toEqual([
      404,
      { error: { code: 'E_NOT_FOUND', message: 'no provider with serial PEER-OK in account nobody' } },
    ])
    await expect(client('allowed', new MapPins()).pinPeerKey('PEER-OK')).rejects.toMatchObject({ code: 'E_NOT_FOUND' })
    expect(await peerKey('peers', 'PEER-OFFLINE')).toMatchObject({
      public_key: keyB64(ids.peerOffline),
      attested: true,
      status: 'offline',
      trust_level: 'software',
    })
  })

  test('the client pins an attested key once, confirms it later, refuses unattested keys and a changed key', async () => {
    const pins = new MapPins()
    const c = client('peers', pins)
    const first = await c.pinPeerKey('PEER-OK')
    expect([first.source, first.coordinator, first.pin, Buffer.from(first.publicKey).toString('base64')]).toEqual([
      'coordinator',
      'reachable',
      'new',
      keyB64(ids.peerOk),
    ])
    expect(pins.get('PEER-OK')).toMatchObject({
      publicKey: keyB64(ids.peerOk),
      keyKind: 'secure-enclave',
      source: 'coordinator',
    })
    expect((await c.pinPeerKey('PEER-OK')).pin).toBe('unchanged')
    await expect(c.pinPeerKey('PEER-FORGED')).rejects.toMatchObject({ code: 'E_PEER_NOT_ATTESTED' })
    await expect(c.pinPeerKey('PEER-UNATTESTED')).rejects.toMatchObject({ code: 'E_PEER_NOT_ATTESTED' })
    pins.set('PEER-NORDMA', { publicKey: keyB64(ids.squatter), keyKind: 'software', source: 'manual', pinnedAt: 1 })
    await expect(c.pinPeerKey('PEER-NORDMA')).rejects.toMatchObject({ code: 'E_PIN_MISMATCH' })
    expect(pins.get('PEER-NORDMA')!.publicKey).toBe(keyB64(ids.squatter))
  })

  test('request validation on POST: 400 malformed, 422 invalid, 413 oversized (with and without Content-Length)', async () => {
    const t = tokens.allowed!
    const cases: [string, number, string][] = [
      ['{"members": [', 400, 'E_MALFORMED'],
      ['[]', 422, 'E_INVALID'],
      ['{"members": "C-ALLOWED-A"}', 422, 'E_INVALID'],
      ['{"members": []}', 422, 'E_INVALID'],
      ['{"members": ["C-ALLOWED-A", "C-ALLOWED-A"]}', 422, 'E_INVALID'],
      ['{"members": ["C-ALLOWED-A"], "ttl_seconds": 5}', 422, 'E_INVALID'],
      ['{"members": ["C-ALLOWED-A"], "extra": 1}', 422, 'E_INVALID'],
      ['{"members": ["NOPE"]}', 403, 'E_FORBIDDEN'],
      ['{"members": ["PEER-OK"]}', 403, 'E_FORBIDDEN'],
      ['{"members": ["C-ALLOWED-A", "PEER-OK"]}', 403, 'E_FORBIDDEN'],
      ['{"members": ["C-ALLOWED-A", "C-UNTRUSTED"]}', 403, 'E_FORBIDDEN'],
      [JSON.stringify({ members: Array.from({ length: 3000 }, (_, i) => `S${i}`) }), 413, 'E_TOO_LARGE'],
    ]
    for (const [body, status, code] of cases) {
      const r = await postRoster(t, body)
      expect([body.slice(0, 40), r.status, ((await r.json()) as { error: { code: string } }).error.code]).toEqual([
        body.slice(0, 40),
        status,
        code,
      ])
    }
    // an untrusted member of the caller's own account cannot join either
    const untrusted = await postRoster(tokens.untrusted!, '{"members": ["C-UNTRUSTED"]}')
    expect([untrusted.status, ((await untrusted.json()) as { error: { code: string } }).error.code]).toEqual([
      422,
      'E_INVALID',
    ])
    const chunks = new ReadableStream({
      start(ctl) {
        for (let i = 0; i < 20; i++) ctl.enqueue(new TextEncoder().encode(' '.repeat(1024)))
        ctl.close()
      },
    })
    const streamed = await postRoster(t, chunks)
    expect([streamed.status, ((await streamed.json()) as { error: { code: string } }).error.code]).toEqual([
      413,
      'E_TOO_LARGE',
    ])
    expect((await get('/v1/nothing-here', t)).status).toBe(404)
    const plain = await get('/v1/provider/ws', t)
    expect([plain.status, await plain.json()]).toEqual([
      400,
      { error: { code: 'E_MALFORMED', message: 'expected a WebSocket upgrade' } },
    ])
  })
})

let roster: SignedRoster
describe('rosters and cluster registration', () => {
  test("a roster is signed by the coordinator key; trust is the lowest member's; the client verifies it", async () => {
    const c = client('allowed', new MapPins())
    const made = await c.createRoster(['C-ALLOWED-A', 'C-ALLOWED-B'], 3600)
    roster = made.roster
    expect(made.body.members.map((m) => [m.serial, m.public_key, m.trust_level, m.attested])).toEqual([
      ['C-ALLOWED-A', keyB64(ids.allowedA), 'software', true],
      ['C-ALLOWED-B', keyB64(ids.allowedB), 'software', true],
    ])
    expect([made.body.head, made.body.trust_level]).toEqual(['C-ALLOWED-A', 'software'])
    expect(made.body.expires_at - made.body.issued_at).toBe(3600_000)
    const health = (await (await get('/health')).json()) as { coordinator_key: string }
    const key = new Uint8Array(Buffer.from(health.coordinator_key, 'base64'))
    expect(
      verifySignature(
        key,
        new TextEncoder().encode(canonicalJson(roster.body)),
        new Uint8Array(Buffer.from(roster.signature, 'base64')),
      ),
    ).toBe(true)
  })

  test('the client rejects a tampered roster, a roster from another coordinator, and an expired roster', async () => {
    const c = client('allowed', new MapPins())
    const tampered = structuredClone(roster)
    tampered.body.members[1]!.public_key = keyB64(ids.squatter)
    await expect(c.verifyRoster(tampered)).rejects.toMatchObject({
      code: 'E_ROSTER_REJECTED',
      message: 'roster signature does not verify against the coordinator key',
    })
    const raised = structuredClone(roster)
    raised.body.trust_level = 'hardware'
    await expect(c.verifyRoster(raised)).rejects.toMatchObject({ code: 'E_ROSTER_REJECTED' })
    const foreign = new CoordinatorClient({
      url: coord.url,
      token: tokens.allowed!,
      coordinatorKey: ids.squatter.publicKey,
    })
    await expect(foreign.verifyRoster(roster)).rejects.toMatchObject({
      message: 'roster was signed by a different coordinator',
    })
    const short = await c.createRoster(['C-ALLOWED-B'], 60)
    const later = new CoordinatorClient({ url: coord.url, token: tokens.allowed!, now: () => Date.now() + 61_000 })
    await expect(later.verifyRoster(short.roster)).rejects.toMatchObject({
      code: 'E_ROSTER_REJECTED',
      message: expect.stringContaining('roster expired at'),
    })
    expect((await c.verifyRoster(short.roster)).members[0]!.serial).toBe('C-ALLOWED-B')
  })

  test("the head registers the cluster as one provider, relaying each member's attestation; trust = lowest member", async () => {
    const attestations = [
      await attest(ids.allowedA, 'C-ALLOWED-A', true),
      await attest(ids.allowedB, 'C-ALLOWED-B', true),
    ]
    const s = await openSocket(coord.url, tokens.allowed!)
    s.send({ type: 'register_cluster', roster, attestations })
    const reply = await s.next()
    const serial = `cluster:${roster.body.cluster_id}`
    expect(reply).toEqual({
      type: 'registered',
      serial,
      kind: 'cluster',
      status: 'online',
      attested: true,
      trust_level: 'software',
      rdma_enabled: false,
      reason: null,
      members: [
        { serial: 'C-ALLOWED-A', attested: true, trust_level: 'software', reason: null },
        { serial: 'C-ALLOWED-B', attested: true, trust_level: 'software', reason: null },
      ],
    })
    expect(await peerKey('allowed', serial)).toMatchObject({
      kind: 'cluster',
      trust_level: 'software',
      attested: true,
      public_key: keyB64(ids.allowedA),
    })
    s.send({ type: 'heartbeat' })
    expect(await s.next()).toEqual({ type: 'heartbeat_acknowledged', status: 'online' })
    s.ws.close()
    // A member whose attestation is missing or stale leaves the cluster unattested and untrusted.
    const t = await openSocket(coord.url, tokens.allowed!)
    t.send({
      type: 'register_cluster',
      roster,
      attestations: [attestations[0], await attest(ids.allowedB, 'C-ALLOWED-B', true, Date.now() - 3600_000)],
    })
    const weak = await t.next()
    expect(weak).toMatchObject({ serial, attested: false, status: 'untrusted', trust_level: 'none' })
    expect((weak.members as { attested: boolean }[]).map((m) => m.attested)).toEqual([true, false])
    t.ws.close()
    // Only the head's account may register its cluster.
    const u = await openSocket(coord.url, tokens.peers!)
    u.send({ type: 'register_cluster', roster, attestations })
    expect(await u.next()).toMatchObject({ type: 'error', code: 'E_FORBIDDEN' })
    u.ws.close()
  })
})

describe('restart', () => {
  test('SIGTERM stops cleanly; registrations, tokens, keys and the coordinator key persist; the client falls back to pins while it is down', async () => {
    const before = (await (await get('/v1/coordinator', tokens.peers)).json()) as { public_key: string }
    const pins = new MapPins()
    await client('peers', pins).pinPeerKey('PEER-OK')
    // A raw socket does not reconnect: its provider shows what a restart does to whoever was online.
    const raw = await register(coord.url, tokens.offline!, {
      rdma_enabled: true,
      attestation: attester(ids.peerOffline, 'C-RAW', true),
    })
    expect(raw.reply).toMatchObject({ serial: 'C-RAW', status: 'online', attested: true })
    expect((await rdmaPeers('offline')).status).toBe(200)
    expect(await coord.stop('SIGTERM')).toBe(0)
    expect(coord.output()).toContain('coordinator stopped')

    // Down: a pinned key is still served, and the result says the coordinator was not asked.
    const down = new CoordinatorClient({ url: coord.url, token: tokens.peers!, pins, retry: fast })
    const served = await down.pinPeerKey('PEER-OK')
    expect([served.source, served.coordinator, served.pin, Buffer.from(served.publicKey).toString('base64')]).toEqual([
      'pin',
      'unreachable',
      'pinned-only',
      keyB64(ids.peerOk),
    ])
    expect(served.message).toContain('coordinator unreachable: using the key pinned for PEER-OK')
    await expect(down.pinPeerKey('C-ALLOWED-B')).rejects.toMatchObject({ code: 'E_COORDINATOR_UNREACHABLE' })

    // Same port: the providers' connections were made to this address and come back to it.
    coord = await startCoordinator(db, ['--offline-after', String(OFFLINE_AFTER_S)], Number(new URL(coord.url).port))
    expect(coord.output()).toContain('signing key loaded')
    const after = (await (await get('/v1/coordinator', tokens.peers)).json()) as { public_key: string }
    expect(after.public_key).toBe(before.public_key)
    expect(await peerKey('peers', 'PEER-OK')).toMatchObject({
      serial: 'PEER-OK',
      public_key: keyB64(ids.peerOk),
      key_kind: 'secure-enclave',
      trust_level: 'software',
      attested: true,
    })
    expect(await peerKey('offline', 'C-RAW')).toMatchObject({
      public_key: keyB64(ids.peerOffline),
      attested: true,
      status: 'offline',
    })
    expect(await peerKey('untrusted', 'C-UNTRUSTED')).toMatchObject({
      public_key: keyB64(ids.untrusted),
      status: 'untrusted',
    })
    // The roster signed before the restart still verifies; the gate is closed to an account whose machine has not come back.
    expect((await client('allowed', new MapPins()).verifyRoster(roster)).cluster_id).toBe(roster.body.cluster_id)
    expect((await rdmaPeers('offline')).status).toBe(403)
    // The client's connections reconnect on their own (backoff) and register again.
    await eventually(
      async () => (await rdmaPeers('allowed')).status === 200 && (await statusOf('peers', 'PEER-OK')) === 'online',
      15_000,
    )
    expect(
      ((await (await rdmaPeers('allowed')).json()) as { peers: { serial: string }[] }).peers.map((p) => p.serial),
    ).toEqual(['PEER-OK'])
  }, 40_000)
})
