/** Client behaviour with an injected fetch: retries with backoff on network errors and 5xx only, server error codes surfaced, tokens. */
import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { CoordinatorClient, type PinStore } from '../../src/coordinator/client.ts'
import { FilePinStore } from '../../src/trust/pinned-keys.ts'
import { identity, keyB64, tempDir } from './support.ts'
import { backoffDelay, withRetry } from '../../src/coordinator/retry.ts'
import { bearerToken, generateToken, hashToken } from '../../src/coordinator/tokens.ts'

const policy = { attempts: 4, baseMs: 100, maxMs: 1000 }

describe('backoff', () => {
  test('doubles from base, capped at max, jittered into [½, 1]', () => {
    expect([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000])
    expect([0, 1, 2].map((n) => backoffDelay(n, policy, () => 0))).toEqual([50, 100, 200])
  })

  test('withRetry stops at the first success, gives up after `attempts`, never retries what is not retryable', async () => {
    const slept: number[] = []
    const sleep = async (ms: number) => void slept.push(ms)
    let calls = 0
    expect(
      await withRetry(async () => (++calls < 3 ? Promise.reject(new Error('down')) : 'up'), policy, {
        sleep,
        random: () => 1,
        isRetryable: () => true,
      }),
    ).toBe('up')
    expect([calls, slept]).toEqual([3, [100, 200]])
    calls = 0
    await expect(
      withRetry(async () => Promise.reject(new Error(`try ${++calls}`)), policy, { sleep, isRetryable: () => true }),
    ).rejects.toThrow('try 4')
    calls = 0
    await expect(
      withRetry(async () => Promise.reject(new Error(`try ${++calls}`)), policy, { sleep, isRetryable: () => false }),
    ).rejects.toThrow('try 1')
  })
})

describe('CoordinatorClient requests', () => {
  const answers = (list: (Response | Error)[]) => {
    const seen: { url: string; auth: string | null }[] = []
    const fetch = async (url: string, init?: RequestInit) => {
      seen.push({ url, auth: new Headers(init?.headers).get('authorization') })
      const next = list.shift()!
      if (next instanceof Error) throw next
      return next
    }
    return { fetch, seen }
  }
  const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status })

  test('retries network errors and 503, then succeeds; sends the bearer token', async () => {
    const { fetch, seen } = answers([
      new Error('ECONNREFUSED'),
      json(503, { error: { code: 'E_INTERNAL', message: 'busy' } }),
      json(200, { peers: [] }),
    ])
    const retried: number[] = []
    const c = new CoordinatorClient({
      url: 'http://coord:7470/',
      token: 'dbc_t',
      fetch,
      retry: policy,
      sleep: async () => {},
      onRetry: (_, n) => retried.push(n),
    })
    expect(await c.rdmaPeers()).toEqual([])
    expect(seen).toEqual(Array(3).fill({ url: 'http://coord:7470/v1/cluster/rdma-peers', auth: 'Bearer dbc_t' }))
    expect(retried).toEqual([1, 2])
  })

  test('a 403 is not retried and keeps the server code, message and status', async () => {
    const { fetch, seen } = answers([json(403, { error: { code: 'E_FORBIDDEN', message: 'no provider' } })])
    const c = new CoordinatorClient({ url: 'ws://coord:7470', token: 't', fetch, retry: policy, sleep: async () => {} })
    await expect(c.rdmaPeers()).rejects.toMatchObject({ code: 'E_FORBIDDEN', message: 'no provider', status: 403 })
    expect(seen.length).toBe(1)
    expect(c.url).toBe('http://coord:7470')
  })

  test('unreachable after every try: E_COORDINATOR_UNREACHABLE', async () => {
    const { fetch, seen } = answers(Array.from({ length: 4 }, () => new Error('ECONNREFUSED')))
    const c = new CoordinatorClient({ url: 'http://coord:1', token: 't', fetch, retry: policy, sleep: async () => {} })
    await expect(c.peerKey('S1')).rejects.toMatchObject({ code: 'E_COORDINATOR_UNREACHABLE' })
    expect(seen.length).toBe(4)
  })
})

describe("pinning through the trust layer's file store", () => {
  test('pins into a FilePinStore, and serves from it (saying so) once the coordinator is unreachable', async () => {
    const path = join(tempDir(), 'pins.json')
    const pins: PinStore = new FilePinStore(path)
    const peer = identity(5, 'secure-enclave')
    const answer = {
      serial: 'S1',
      public_key: keyB64(peer),
      key_kind: 'secure-enclave',
      trust_level: 'hardware',
      attested: true,
      kind: 'machine',
      status: 'offline',
    }
    let up = true
    const fetch = async () => {
      if (!up) throw new Error('ECONNREFUSED')
      return new Response(JSON.stringify(answer))
    }
    const c = new CoordinatorClient({
      url: 'http://coord:7470',
      token: 't',
      pins,
      fetch,
      retry: policy,
      sleep: async () => {},
      now: () => 1234,
    })
    expect(await c.pinPeerKey('S1')).toMatchObject({ source: 'coordinator', coordinator: 'reachable', pin: 'new' })
    expect(new FilePinStore(path).get('S1')).toEqual({
      publicKey: keyB64(peer),
      keyKind: 'secure-enclave',
      source: 'coordinator',
      pinnedAt: 1234,
    })
    up = false
    const down = await new CoordinatorClient({
      url: 'http://coord:7470',
      token: 't',
      pins: new FilePinStore(path),
      fetch,
      retry: policy,
      sleep: async () => {},
    }).pinPeerKey('S1')
    expect(down).toMatchObject({
      source: 'pin',
      coordinator: 'unreachable',
      pin: 'pinned-only',
      message: `coordinator unreachable: using the key pinned for S1 on ${new Date(1234).toISOString()}`,
    })
    expect(down.publicKey).toEqual(peer.publicKey)
  })
})

describe('tokens', () => {
  test('dbc_ + 43 base64url characters; the stored form is the SHA-256 hex', () => {
    const token = generateToken((n) => new Uint8Array(n).fill(7))
    expect(token).toBe(`dbc_${Buffer.alloc(32, 7).toString('base64url')}`)
    expect(hashToken('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    expect(generateToken()).not.toBe(generateToken())
  })
  test('only a well-formed Bearer header yields a token', () => {
    expect(bearerToken('Bearer dbc_x')).toBe('dbc_x')
    expect(bearerToken('bearer dbc_x ')).toBe('dbc_x')
    for (const bad of [undefined, '', 'Bearer', 'Basic dbc_x', 'Bearer a b', 'dbc_x'])
      expect(bearerToken(bad)).toBeUndefined()
  })
})
