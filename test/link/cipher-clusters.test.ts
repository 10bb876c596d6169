/** --cipher across real processes: a 2-node pipeline and a 2-rank sealed tensor-parallel group each serve the greedy
 * text of one process with either cipher; nodes started with different ciphers are refused in the handshake, naming
 * both; and `serve --cipher bogus` is refused by name before anything loads. */
import { afterAll, expect, test } from 'bun:test'
import { prepareLocalNodes, startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { CIPHERS } from '../../src/link/aead-channel.ts'
import { spawnServeNode, stopNodes } from '../support/serve-node.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const clusters: LocalCluster[] = []
afterAll(async () => {
  for (const c of clusters) await c.stop()
  await stopNodes()
})
const ARGS = ['--backend', 'cpu', '--threads', '1', '--max-context', '256', '--model-id', 'x', '--tp-timeout', '10']
const PROMPT = 'Once upon a time'

function generateAlone(model: string): string {
  const r = Bun.spawnSync(
    [
      ...[process.execPath, 'src/main.ts', 'generate', '--model', model, '--prompt', PROMPT],
      ...['--max-tokens', '8', '--json', '--backend', 'cpu', '--threads', '1'],
    ],
    { cwd: ROOT, stdout: 'pipe' },
  )
  return JSON.parse(r.stdout.toString()).text
}

async function greedyText(c: LocalCluster): Promise<string> {
  const response = await fetch(`${c.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: PROMPT, max_tokens: 8, temperature: 0 }),
  })
  expect(response.status).toBe(200)
  return (await response.json()).choices[0].text
}

for (const parallel of ['pipeline', 'tensor'] as const)
  test(`a 2-node ${parallel} cluster serves one process's greedy text with either cipher`, async () => {
    const model = await synthModel('llama', 'bf16')
    const alone = generateAlone(model)
    expect(alone.length).toBeGreaterThan(0)
    for (const cipher of CIPHERS) {
      const c = await startLocalCluster({
        nodes: 2,
        parallel,
        model,
        apiPort: 0,
        self: [process.execPath, `${ROOT}src/main.ts`],
        extraArgs: [...ARGS, '--cipher', cipher],
      })
      clusters.push(c)
      expect(await greedyText(c)).toBe(alone)
      await c.stop()
    }
  }, 120_000)

for (const parallel of ['pipeline', 'tensor'] as const)
  test(`a ${parallel} node started with another --cipher than rank 0 is refused in the handshake, naming both`, async () => {
    const model = await synthModel('llama', 'bf16')
    const { homes, peers, ports } = prepareLocalNodes(2)
    const group = (rank: number) =>
      parallel === 'pipeline'
        ? ['--peers', peers, '--rank', String(rank)]
        : [
            '--tp',
            '2',
            '--tp-rank',
            String(rank),
            '--tp-listen',
            `127.0.0.1:${ports[0]}`,
            '--tp-peer',
            `127.0.0.1:${ports[0]}`,
          ]
    const node = (rank: number, cipher: string) =>
      spawnServeNode(homes[rank]!, [
        ...['--model', model, ...group(rank), '--node-name', `node-${rank}`],
        ...[...ARGS, '--port', '0', '--cipher', cipher],
      ])
    const head = node(0, 'aes-256-gcm')
    const other = node(1, 'chacha20-poly1305')
    // rank 0 answers (responder), so the message is from its side: the dialling node seals with ChaCha20-Poly1305
    const expected = 'peer node-1 seals with chacha20-poly1305, this node (node-0) with aes-256-gcm'
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline && !(head.output() + other.output()).includes(expected)) await Bun.sleep(100)
    const both = head.output() + other.output()
    expect(both).toContain('E_CIPHER_MISMATCH')
    expect(both).toContain(`${expected}: start both with the same --cipher`)
    expect(head.output()).not.toContain('listening on')
    await stopNodes()
  }, 60_000)

test('serve --cipher bogus is refused by name before anything loads', async () => {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'serve', '--cipher', 'bogus', '--port', '0'], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1' },
  })
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  expect(code).toBe(2)
  expect(out + err).toContain('--cipher')
  expect(out + err).toContain('bogus')
  expect(out + err).toContain('aes-256-gcm, chacha20-poly1305')
  expect(out + err).not.toContain('listening on')
}, 30_000)
