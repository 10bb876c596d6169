/** `serve --api-key` on a real process: every route needs the key (Bearer, or Basic with the key as the password, which a
 * browser sends after its own prompt on /dashboard); `--public-health` leaves only {status} open; `cluster status`
 * passes the key. */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { startServe, type ServeProcess } from '../support/serve-process.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const KEY = 'sekret-key'
let plain: ServeProcess
let open: ServeProcess
beforeAll(async () => {
  ;[plain, open] = await Promise.all([
    startServe(['--api-key', KEY, '--threads', '1']),
    startServe(['--api-key', KEY, '--public-health', '--threads', '1']),
  ])
}, 120_000)
afterAll(async () => {
  await Promise.all([plain?.stop(), open?.stop()])
})

const ROUTES = ['/health', '/metrics', '/dashboard', '/dashboard/events', '/v1/models', '/nowhere']
const basic = (password: string) => `Basic ${Buffer.from(`anyone:${password}`).toString('base64')}`

test('without the key (or with a wrong one) every route answers 401; the dashboard asks the browser for a password', async () => {
  for (const path of ROUTES) {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${KEY}x`, basic('wrong'), `Token ${KEY}`]) {
      const r = await fetch(`${plain.url}${path}`, { headers: authorization ? { authorization } : {} })
      expect([path, authorization, r.status]).toEqual([path, authorization, 401])
      expect((await r.json()).error.code).toBe('invalid_api_key')
      expect(r.headers.get('www-authenticate')).toBe(
        path.startsWith('/dashboard') ? 'Basic realm="dbcluster", charset="UTF-8"' : null,
      )
    }
  }
})

test('with the key every route answers, as Bearer or as the Basic password', async () => {
  for (const authorization of [`Bearer ${KEY}`, basic(KEY)]) {
    const health = await fetch(`${plain.url}/health`, { headers: { authorization } })
    expect(health.status).toBe(200)
    expect((await health.json()).backend).toBe('cpu')
    expect((await fetch(`${plain.url}/metrics`, { headers: { authorization } })).status).toBe(200)
    expect((await fetch(`${plain.url}/dashboard`, { headers: { authorization } })).status).toBe(200)
    expect((await fetch(`${plain.url}/v1/models`, { headers: { authorization } })).status).toBe(200)
    const events = await fetch(`${plain.url}/dashboard/events`, { headers: { authorization } })
    expect(events.status).toBe(200)
    await events.body?.cancel()
  }
})

test('--public-health: /health answers {status} alone without the key, everything else still needs it', async () => {
  const anon = await fetch(`${open.url}/health`)
  expect([anon.status, await anon.json()]).toEqual([200, { status: 'ok' }])
  const keyed = await fetch(`${open.url}/health`, { headers: { authorization: `Bearer ${KEY}` } })
  expect(Object.keys(await keyed.json())).toContain('kv_slots_free')
  for (const path of ['/metrics', '/dashboard', '/v1/models'])
    expect((await fetch(`${open.url}${path}`)).status).toBe(401)
})

test('cluster status says the key is needed, and reads the head with --api-key', async () => {
  const run = async (...extra: string[]) => {
    const p = Bun.spawn([process.execPath, 'src/main.ts', 'cluster', 'status', '--url', plain.url, ...extra], {
      cwd: ROOT,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, NO_COLOR: '1', DBCLUSTER_API_KEY: '' },
    })
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
    return { text: out + err, code }
  }
  const refused = await run()
  expect(refused.code).not.toBe(0)
  expect(refused.text).toContain('needs its API key for /health')
  const ok = await run('--api-key', KEY, '--json')
  expect(ok.code).toBe(0)
  expect(JSON.parse(ok.text.trim().split('\n').at(-1)!).status).toBe('ok')
}, 30_000)
