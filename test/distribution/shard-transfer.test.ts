/** Shard transfer between real processes on loopback: a head serving a model folder and stages receiving their layers'
 * files over the sealed link, verified against the head's signed manifest. */
import { afterAll, afterEach, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildManifest, filesForStage, type StageRange } from '../../src/distribution/manifest.ts'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { maxAbsDiff } from '../reference/kernels.ts'
import { synthModel } from '../support/synth-models.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ROOT = new URL('../..', import.meta.url).pathname
// untied llama, q4: embedding, each layer and lm_head in files of their own (plus the 11 MB tokenizer every stage needs)
const model = await synthModel('llama', 'q4', { shardBytes: 30_000, tieEmbeddings: false })
const manifest = buildManifest(model)
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')
const procs: { kill(): void }[] = []
afterEach(() => procs.splice(0).forEach((p) => p.kill()))

async function startHead(env: Record<string, string> = {}) {
  const proc = Bun.spawn([process.execPath, 'test/support/shard-head.ts'], {
    cwd: ROOT,
    env: { ...process.env, MODEL_DIR: model, ...env },
    stdout: 'pipe',
    stderr: 'ignore',
  })
  procs.push(proc)
  const reader = proc.stdout.getReader()
  let text = ''
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read()
    if (done) throw new Error('head exited')
    text += new TextDecoder().decode(value)
  }
  const port = Number(/listening (\d+)/.exec(text)![1])
  // what the head reports afterwards: one line per file a stage confirmed with the hash it computed
  const verified: { peer: string; file: string; sha256: string }[] = []
  void (async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      text += new TextDecoder().decode(r.value)
      const lines = text.split('\n')
      text = lines.pop()!
      for (const l of lines) if (l.startsWith('{')) verified.push(JSON.parse(l))
    }
  })()
  return { port, verified }
}

type Line = {
  event?: { type: string; file: string; resumedFrom?: number; bytes?: number }
  progress?: number
  result?: { files: string[]; received: string[]; bytes: number }
  error?: { code: string; message: string }
}

function startStage(port: number, dir: string, range: StageRange, env: Record<string, string> = {}) {
  const proc = Bun.spawn([process.execPath, 'test/support/shard-stage.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      DIR: dir,
      LO: String(range.lo),
      HI: String(range.hi),
      FIRST: range.first ? '1' : '0',
      LAST: range.last ? '1' : '0',
      ...env,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  procs.push(proc)
  const lines: Line[] = []
  let onLine: (l: Line) => void = () => {}
  const done = (async () => {
    const reader = proc.stdout.getReader()
    let buffer = ''
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      buffer += new TextDecoder().decode(r.value)
      for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
        const line = JSON.parse(buffer.slice(0, at)) as Line
        buffer = buffer.slice(at + 1)
        lines.push(line)
        onLine(line)
      }
    }
    return {
      code: await proc.exited,
      lines,
      result: lines.find((l) => l.result)?.result,
      error: lines.find((l) => l.error)?.error,
    }
  })()
  return { proc, done, lines, watch: (f: (l: Line) => void) => (onLine = f) }
}

const STAGES: StageRange[] = [
  { lo: 0, hi: 1, first: true, last: false },
  { lo: 1, hi: 2, first: false, last: false },
  { lo: 2, hi: 3, first: false, last: true },
]
const stageDirs: string[] = []
const tmp = () => mkdtempSync(join(scratch, 'dbc-stage-'))
/** The model files in a stage folder (the stage's own dotfiles, such as its record of verified files, left out). */
const listed = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith('.'))

test('each stage ends with exactly its files, every hash verified; a second run finds them and transfers nothing', async () => {
  const { port, verified } = await startHead()
  const weightFiles = new Set<string>()
  for (const range of STAGES) {
    const dir = tmp()
    stageDirs.push(dir)
    const expected = filesForStage(manifest, range)
      .map((f) => f.name)
      .sort()
    const { code, result } = await startStage(port, dir, range).done
    expect(code).toBe(0)
    expect(result!.files.sort()).toEqual(expected)
    expect(listed(dir).sort()).toEqual(expected)
    for (const name of expected) expect(sha256(join(dir, name))).toBe(sha256(join(model, name)))
    expect(result!.bytes).toBe(expected.reduce((a, n) => a + statSync(join(model, n)).size, 0))
    for (const n of expected.filter((n) => n.endsWith('.safetensors'))) weightFiles.add(n)

    const again = await startStage(port, dir, range).done
    expect(again.code).toBe(0)
    expect(again.result!.received).toEqual([])
    expect(again.result!.bytes).toBe(0)
    expect(again.lines.filter((l) => l.event?.type === 'present').length).toBe(expected.length)
    // received files were recorded as verified: the second run did not hash them again
    expect(
      again.lines
        .filter((l) => l.event?.type === 'present')
        .every((l) => (l.event as { checked?: string }).checked === 'unchanged since verified'),
    ).toBe(true)
  }
  // the head heard a matching hash back for every file it sent
  await Bun.sleep(100)
  expect(verified.length).toBe(STAGES.reduce((a, r) => a + filesForStage(manifest, r).length, 0))
  for (const v of verified)
    expect(v).toEqual({
      type: 'verified',
      peer: 'stage',
      file: v.file,
      sha256: manifest.files.find((f) => f.name === v.file)!.sha256,
    } as never)
  // the three stages split the weights: every weight file went somewhere, and no stage got them all
  expect([...weightFiles].sort()).toEqual(
    manifest.files
      .filter((f) => f.name.endsWith('.safetensors'))
      .map((f) => f.name)
      .sort(),
  )
  for (const range of STAGES)
    expect(filesForStage(manifest, range).filter((f) => f.name.endsWith('.safetensors')).length).toBeLessThan(
      weightFiles.size,
    )
}, 60_000)

test('each stage loads from its own folder alone, and the three together compute what the whole model computes', async () => {
  expect(stageDirs.length).toBe(3)
  const backend = openCpuBackend()
  const prompt = [9707, 11, 1879, 0, 3555]
  const step = {
    tokens: Int32Array.from(prompt),
    slots: new Int32Array(prompt.length),
    positions: Int32Array.from(prompt.keys()),
  }
  const mono = ModelStage.load(model, backend, { slots: 1, maxLen: 16 })
  const stages = STAGES.map((r, i) =>
    ModelStage.load(stageDirs[i]!, backend, { lo: r.lo, hi: r.hi, slots: 1, maxLen: 16 }),
  )
  const want = await new LocalPipeline([mono]).step(step)
  const got = await new LocalPipeline(stages).step(step)
  expect(maxAbsDiff(got, want)).toBeLessThan(1e-5)
  for (const s of [mono, ...stages]) s.close()
})

test('a tampered byte is caught: deleted, fetched once more, then refused with the file named', async () => {
  const victim = filesForStage(manifest, STAGES[1]!).find((f) => f.name.endsWith('.safetensors'))!.name
  const { port } = await startHead({ TAMPER: victim })
  const dir = tmp()
  const { code, error, lines } = await startStage(port, dir, STAGES[1]!).done
  expect(code).toBe(1)
  expect(error!.code).toBe('E_HASH_MISMATCH')
  expect(error!.message).toContain(`${victim} from head does not match the manifest's SHA-256`)
  expect(lines.filter((l) => l.event?.type === 'retry').map((l) => l.event!.file)).toEqual([victim])
  expect(existsSync(join(dir, victim))).toBe(false)
  expect(existsSync(join(dir, `${victim}.part`))).toBe(false)
}, 60_000)

test('a stage killed mid-transfer resumes from its .part when it restarts', async () => {
  const { port } = await startHead()
  const dir = tmp()
  const range = STAGES[2]!
  const first = startStage(port, dir, range, { THROTTLE: String(4 * 1024 * 1024), CHUNK: String(256 * 1024) })
  await new Promise<void>((resolve) => first.watch((l) => (l.progress ?? 0) > 3 * 1024 * 1024 && resolve()))
  first.proc.kill('SIGKILL')
  await first.done
  const parts = readdirSync(dir).filter((f) => f.endsWith('.part'))
  expect(parts.length).toBe(1)
  const partName = parts[0]!.slice(0, -'.part'.length)
  const partBytes = statSync(join(dir, parts[0]!)).size
  expect(partBytes).toBeGreaterThan(0)
  const done = listed(dir).filter((f) => !f.endsWith('.part'))

  const second = await startStage(port, dir, range).done
  expect(second.code).toBe(0)
  const resumed = second.lines.find((l) => l.event?.type === 'received' && l.event.file === partName)!.event!
  expect(resumed.resumedFrom).toBe(partBytes)
  const expected = filesForStage(manifest, range)
  const remaining = expected.filter((f) => !done.includes(f.name)).reduce((a, f) => a + f.size, 0) - partBytes
  expect(second.result!.bytes).toBe(remaining)
  expect(listed(dir).sort()).toEqual(expected.map((f) => f.name).sort())
  for (const f of expected) expect(sha256(join(dir, f.name))).toBe(f.sha256)
}, 60_000)

test('a file changed after it was verified is hashed again and fetched again; the unchanged ones are not re-read', async () => {
  const { port } = await startHead()
  const dir = tmp()
  const range = STAGES[0]!
  expect((await startStage(port, dir, range).done).code).toBe(0)
  const victim = filesForStage(manifest, range).find((f) => f.name.endsWith('.safetensors'))!
  const bytes = readFileSync(join(dir, victim.name))
  bytes[bytes.byteLength >> 1]! ^= 0x01
  writeFileSync(join(dir, victim.name), bytes) // same size, new contents and time
  const again = await startStage(port, dir, range).done
  expect(again.code).toBe(0)
  expect(again.result!.received).toEqual([victim.name])
  const present = again.lines
    .filter((l) => l.event?.type === 'present')
    .map((l) => (l.event as { checked?: string }).checked)
  expect(present.length).toBe(filesForStage(manifest, range).length - 1)
  expect(present.every((c) => c === 'unchanged since verified')).toBe(true)
  expect(sha256(join(dir, victim.name))).toBe(victim.sha256)
}, 60_000)

test('a manifest signed by a key other than the pinned head key is refused before any file is written', async () => {
  const { port } = await startHead({ SIGN_SEED: '3' })
  const dir = tmp()
  const { code, error } = await startStage(port, dir, STAGES[0]!).done
  expect(code).toBe(1)
  expect(error!.code).toBe('E_MANIFEST_SIGNATURE')
  expect(readdirSync(dir)).toEqual([])
}, 30_000)

test('not enough disk: refused before the transfer starts, saying how much is missing', async () => {
  const { port } = await startHead({ HUGE: '1' })
  const dir = tmp()
  const { code, error } = await startStage(port, dir, STAGES[0]!).done
  expect(code).toBe(1)
  expect(error!.code).toBe('E_DISK_SPACE')
  expect(error!.message).toMatch(/needs \d+\.\d\d GiB on .* but only .* is free: \d+\.\d\d GiB missing/)
  expect(readdirSync(dir)).toEqual([])
}, 30_000)
