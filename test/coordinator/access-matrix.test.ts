/** The coordinator's access rules as a matrix on a real process: two accounts with machines (alice, bob), one with none
 * (carol) and a revoked token, against every route that names providers. docs/coordinator.md §Access rules is this
 * table in words; a row that changes here must change there. */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { join } from 'node:path'
import {
  attest,
  attester,
  createToken,
  identity,
  openSocket,
  register,
  startCoordinator,
  tempDir,
  type CoordinatorProcess,
  type RawSocket,
} from './support.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let coord: CoordinatorProcess
const tokens: Record<string, string> = {}
const sockets: RawSocket[] = []

beforeAll(async () => {
  const db = join(tempDir(), 'c.db')
  for (const name of ['alice', 'bob', 'carol', 'revoked']) tokens[name] = await createToken(db, name)
  coord = await startCoordinator(db)
  const machines: [string, string, number][] = [
    ['alice', 'alice-1', 61],
    ['alice', 'alice-2', 62],
    ['bob', 'bob-1', 63],
  ]
  for (const [account, serial, seed] of machines) {
    const { socket, reply } = await register(coord.url, tokens[account]!, {
      rdma_enabled: true,
      attestation: attester(identity(seed), serial, true),
    })
    expect(reply).toMatchObject({ serial, attested: true, status: 'online' })
    sockets.push(socket)
  }
  const revoke = Bun.spawnSync(
    [process.execPath, 'src/main.ts', 'coordinator', 'token', 'revoke', '--token', tokens.revoked!, '--db', db],
    { cwd: ROOT },
  )
  expect(revoke.exitCode).toBe(0)
}, 60_000)

afterAll(async () => {
  for (const s of sockets) s.ws.close()
  await coord?.stop()
})

const CALLERS = ['alice', 'bob', 'carol', 'revoked', 'none'] as const
type Caller = (typeof CALLERS)[number]
const headers = (caller: Caller): Record<string, string> =>
  caller === 'none' ? {} : { authorization: `Bearer ${tokens[caller]}` }
const get = (caller: Caller, path: string) => fetch(`${coord.url}${path}`, { headers: headers(caller) })
const post = (caller: Caller, path: string, body: unknown) =>
  fetch(`${coord.url}${path}`, {
    method: 'POST',
    headers: { ...headers(caller), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

/** Each row: what each caller gets, as a status (and, where it matters, what the answer holds). */
async function row(
  request: (c: Caller) => Promise<Response>,
  describe: (r: Response, body: any) => unknown = (r) => r.status,
) {
  const out: Record<string, unknown> = {}
  for (const caller of CALLERS) {
    const r = await request(caller)
    out[caller] = await describe(r, await r.json())
  }
  return out
}

test("peer-key: only the caller's own machines; another account's serial is the same 404 as an unknown one", async () => {
  expect(await row((c) => get(c, '/v1/cluster/peer-key?serial=alice-1'))).toEqual({
    alice: 200,
    bob: 404,
    carol: 404,
    revoked: 401,
    none: 401,
  })
  expect(await row((c) => get(c, '/v1/cluster/peer-key?serial=bob-1'))).toEqual({
    alice: 404,
    bob: 200,
    carol: 404,
    revoked: 401,
    none: 401,
  })
  const foreign = await (await get('bob', '/v1/cluster/peer-key?serial=alice-1')).json()
  const unknown = await (await get('bob', '/v1/cluster/peer-key?serial=nobody-9')).json()
  expect(foreign.error.message.replace('alice-1', 'X')).toBe(unknown.error.message.replace('nobody-9', 'X'))
})

test('account/providers: each account sees its own machines only', async () => {
  const serials = (r: Response, body: { providers?: { serial: string }[] }) =>
    r.status === 200 ? body.providers!.map((p) => p.serial) : r.status
  expect(await row((c) => get(c, '/v1/account/providers'), serials)).toEqual({
    alice: ['alice-1', 'alice-2'],
    bob: ['bob-1'],
    carol: [],
    revoked: 401,
    none: 401,
  })
})

test("rdma-peers: the symmetric gate — an account with an eligible machine sees the others' (never its own); one without gets 403", async () => {
  const serials = (r: Response, body: { peers?: { serial: string }[] }) =>
    r.status === 200 ? body.peers!.map((p) => p.serial) : r.status
  expect(await row((c) => get(c, '/v1/cluster/rdma-peers'), serials)).toEqual({
    alice: ['bob-1'],
    bob: ['alice-1', 'alice-2'],
    carol: 403,
    revoked: 401,
    none: 401,
  })
})

test("roster: only over the caller's own machines; a foreign member anywhere in the list is 403", async () => {
  expect(await row((c) => post(c, '/v1/cluster/roster', { members: ['alice-1', 'alice-2'] }))).toEqual({
    alice: 201,
    bob: 403,
    carol: 403,
    revoked: 401,
    none: 401,
  })
  expect(await row((c) => post(c, '/v1/cluster/roster', { members: ['bob-1', 'alice-1'] }))).toEqual({
    alice: 403,
    bob: 403,
    carol: 403,
    revoked: 401,
    none: 401,
  })
  const refused = await (await post('bob', '/v1/cluster/roster', { members: ['bob-1', 'alice-1'] })).json()
  expect(refused.error.message).toBe('members that are not providers of account bob: alice-1')
})

test('cluster registration: only the account that owns the head; a revoked token cannot open the socket', async () => {
  const roster = await (await post('alice', '/v1/cluster/roster', { members: ['alice-1', 'alice-2'] })).json()
  const attestations = [await attest(identity(61), 'alice-1', true), await attest(identity(62), 'alice-2', true)]
  const outcome: Record<string, unknown> = {}
  for (const caller of ['alice', 'bob', 'carol'] as const) {
    const s = await openSocket(coord.url, tokens[caller]!)
    s.send({ type: 'register_cluster', roster, attestations })
    const reply = await s.next()
    outcome[caller] = reply.type === 'registered' ? 'registered' : reply.code
    s.ws.close()
  }
  outcome.revoked = await openSocket(coord.url, tokens.revoked!).then(
    (s) => (s.ws.close(), 'opened'),
    () => 'refused',
  )
  expect(outcome).toEqual({ alice: 'registered', bob: 'E_FORBIDDEN', carol: 'E_FORBIDDEN', revoked: 'refused' })
})
