/** The coordinator's HTTP API as a Hono app: bearer auth, peer keys, the RDMA peer list gate, signed rosters, and the provider socket upgrade. */
import { Hono, type Context } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { fingerprint, type Identity } from '../trust/identity.ts'
import { CoordinatorError, httpStatusOf } from './errors.ts'
import { rdmaPeersFor } from './gate.ts'
import type { Log, ProviderSocketsDeps, SocketData } from './provider-sockets.ts'
import { signRoster, type RosterMember } from './roster.ts'
import { LIMITS, parseJson, parseRosterRequest, parseSerialQuery } from './schemas.ts'
import type { Account, CoordinatorStore } from './store.ts'
import { bearerToken, hashToken } from './tokens.ts'
import { trustLevelOf, trustReason } from './trust-level.ts'

export interface CoordinatorAppDeps extends ProviderSocketsDeps {
  store: CoordinatorStore
  signer: Identity
  now: () => number
  log: Log
  /** Cluster ids for new rosters. */
  randomId: () => string
  /** Providers with a live socket right now (for /health). */
  connected?: () => number
}

/** What the Bun server passes per request: the WebSocket upgrade, bound to that request. */
export interface CoordinatorBindings {
  upgrade?: (data: SocketData) => boolean
}

type Env = { Bindings: CoordinatorBindings; Variables: { account: Account } }

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64')

function errorResponse(c: Context, code: string, message: string): Response {
  return c.json({ error: { code, message } }, httpStatusOf(code) as 400)
}

export function createCoordinatorApp(deps: CoordinatorAppDeps): Hono<Env> {
  const { store, signer, now, log } = deps
  const app = new Hono<Env>()

  app.onError((error, c) => {
    if (error instanceof CoordinatorError) return errorResponse(c, error.code, error.message)
    log.warn(`internal error on ${c.req.method} ${c.req.path}: ${error instanceof Error ? error.stack : String(error)}`)
    return errorResponse(c, 'E_INTERNAL', 'internal error')
  })
  app.notFound((c) => errorResponse(c, 'E_NOT_FOUND', `no route ${c.req.method} ${c.req.path}`))

  app.get('/health', (c) =>
    c.json({
      status: 'ok',
      providers: store.statusCounts(),
      connected: deps.connected?.() ?? 0,
      coordinator_key: b64(signer.publicKey),
    }),
  )

  app.use('/v1/*', async (c, next) => {
    const token = bearerToken(c.req.header('authorization'))
    if (!token)
      throw new CoordinatorError(
        'E_UNAUTHORIZED',
        'missing Authorization: Bearer <token>',
        "create one with 'dbcluster coordinator token create'",
      )
    const account = store.accountForTokenHash(hashToken(token))
    if (!account) throw new CoordinatorError('E_UNAUTHORIZED', 'unknown or revoked token')
    c.set('account', account)
    await next()
  })

  app.get('/v1/coordinator', (c) =>
    c.json({ public_key: b64(signer.publicKey), fingerprint: fingerprint(signer.publicKey) }),
  )

  app.get('/v1/account/providers', (c) => {
    const account = c.get('account')
    const providers = store.providersOfAccount(account.id).map((p) => ({
      serial: p.serial,
      kind: p.kind,
      status: p.status,
      status_reason: p.statusReason,
      attested: p.attested,
      trust_level: trustLevelOf(p),
      rdma_enabled: p.rdmaEnabled,
      last_seen: p.lastSeen,
    }))
    return c.json({ account: account.name, providers })
  })

  // Served from the store, not from live sockets: a peer's key is needed to reconnect to it while it is down. Only the
  // caller's own account's providers: another account's serial answers exactly as an unknown one does.
  app.get('/v1/cluster/peer-key', (c) => {
    const account = c.get('account')
    const serial = parseSerialQuery(c.req.query('serial'))
    const p = store.getProvider(serial)
    if (!p || p.accountId !== account.id)
      throw new CoordinatorError('E_NOT_FOUND', `no provider with serial ${serial} in account ${account.name}`)
    return c.json({
      serial: p.serial,
      public_key: p.publicKey,
      key_kind: p.keyKind,
      trust_level: trustLevelOf(p),
      trust_reason: trustReason(p),
      attested: p.attested,
      mda_verified: p.mdaVerified,
      kind: p.kind,
      status: p.status,
    })
  })

  app.get('/v1/cluster/rdma-peers', (c) => {
    const account = c.get('account')
    const verdict = rdmaPeersFor(account.id, store.providersOfAccount(account.id), store.rdmaCandidates())
    if (!verdict.allowed) throw new CoordinatorError('E_FORBIDDEN', verdict.reason)
    return c.json({ peers: verdict.peers })
  })

  app.post(
    '/v1/cluster/roster',
    bodyLimit({
      maxSize: LIMITS.httpBodyBytes,
      onError: () => {
        throw new CoordinatorError('E_TOO_LARGE', `body exceeds ${LIMITS.httpBodyBytes} bytes`)
      },
    }),
    async (c) => {
      const account = c.get('account')
      const request = parseRosterRequest(parseJson(await c.req.text()))
      const records = request.members.map((serial) => ({ serial, p: store.getProvider(serial) }))
      // every member must be this account's own (unknown and foreign serials get the same answer: nothing leaks)
      const foreign = records.filter((r) => !r.p || r.p.accountId !== account.id).map((r) => r.serial)
      if (foreign.length)
        throw new CoordinatorError(
          'E_FORBIDDEN',
          `members that are not providers of account ${account.name}: ${foreign.join(', ')}`,
        )
      const refused = records.filter((r) => r.p!.kind !== 'machine' || r.p!.status === 'untrusted').map((r) => r.serial)
      if (refused.length)
        throw new CoordinatorError(
          'E_INVALID',
          `members that cannot join a cluster (untrusted, or a cluster themselves): ${refused.join(', ')}`,
        )
      const members: RosterMember[] = records.map(({ p }) => ({
        serial: p!.serial,
        public_key: p!.publicKey,
        key_kind: p!.keyKind,
        trust_level: trustLevelOf(p!),
        attested: p!.attested,
      }))
      const roster = await signRoster(signer, {
        clusterId: deps.randomId(),
        members,
        issuedAt: now(),
        ttlMs: request.ttlSeconds * 1000,
      })
      store.saveRoster({
        clusterId: roster.body.cluster_id,
        accountId: account.id,
        body: JSON.stringify(roster.body),
        signature: roster.signature,
        trustLevel: roster.body.trust_level,
        createdAt: roster.body.issued_at,
        expiresAt: roster.body.expires_at,
        members: request.members,
      })
      log.info(
        `roster ${roster.body.cluster_id} signed for ${account.name}: ${request.members.join(', ')} (trust ${roster.body.trust_level})`,
      )
      return c.json(roster, 201)
    },
  )

  app.get('/v1/provider/ws', (c) => {
    if (c.req.header('upgrade')?.toLowerCase() !== 'websocket')
      throw new CoordinatorError('E_MALFORMED', 'expected a WebSocket upgrade')
    const account = c.get('account')
    if (!c.env?.upgrade?.({ accountId: account.id, accountName: account.name }))
      throw new CoordinatorError('E_MALFORMED', 'WebSocket upgrade failed')
    return new Response(null)
  })

  return app
}
