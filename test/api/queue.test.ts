/** GET /queue: where every request stands — running (prefill or decode) and waiting — with token counts and ages, never
 * the prompt's text; behind --api-key like every route. A real serve process with one batch row, so the second request
 * waits. */
import { afterAll, expect, test } from 'bun:test'
import { startServe, type ServeProcess } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'

let server: ServeProcess | undefined
afterAll(() => server?.stop())

const KEY = 'queue-test-key'
const auth = { authorization: `Bearer ${KEY}` }

test('one request decoding, one waiting: ids, states, ages and token counts, no text; 401 without the key', async () => {
  const model = await synthModel('qwen3', 'bf16')
  server = await startServe([
    ...['--model', model, '--model-id', 'x', '--threads', '1', '--max-batch', '1', '--max-context', '512'],
    ...['--api-key', KEY],
  ])
  const secret = 'a prompt whose text must not leave the server'
  const ask = () =>
    fetch(`${server!.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({ model: 'x', prompt: secret, max_tokens: 400, temperature: 0, stream: true }),
    })
  const first = await ask()
  const reader = first.body!.getReader()
  await reader.read() // the first one is running
  const second = ask()
  let queue: { running: number; waiting: number; requests: Record<string, unknown>[] } | undefined
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    queue = await fetch(`${server.url}/queue`, { headers: auth }).then((r) => r.json())
    if (queue!.waiting === 1) break
    await Bun.sleep(20)
  }
  expect(queue!.running).toBe(1)
  expect(queue!.waiting).toBe(1)
  const [oldest, newest] = queue!.requests as {
    id: number
    state: string
    age_ms: number
    prompt_tokens: number
    generated_tokens: number
  }[]
  expect(oldest!.state).toMatch(/^(prefill|decode)$/)
  expect(newest!.state).toBe('waiting')
  expect(newest!.generated_tokens).toBe(0)
  expect(oldest!.prompt_tokens).toBe(newest!.prompt_tokens)
  expect(oldest!.prompt_tokens).toBeGreaterThan(5)
  expect(oldest!.age_ms).toBeGreaterThanOrEqual(newest!.age_ms)
  expect(oldest!.id).not.toBe(newest!.id)
  expect(JSON.stringify(queue)).not.toContain('prompt whose text')
  expect((await fetch(`${server.url}/queue`)).status).toBe(401)
  await reader.cancel()
  await (await second).body?.cancel()
}, 120_000)
