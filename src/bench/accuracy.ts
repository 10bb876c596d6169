/** `bench accuracy`: how faithful each compute path on this machine (AVX-512 and AVX2 kernels, the generic C build, mlx)
 * is to a float64 reference. Each path runs a fixed set of prompts in its own process (the kernel choice is
 * process-wide): the first decodes greedily, the others are teacher-forced along its tokens, so all are compared at the
 * same positions. The reference reads those sequences once, and each path's logits at every decoded position are
 * scored against it: KL divergence, the reference's logit gap of the token the path ranks first, top-1 agreement. */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import { ModelStage } from '../model/shard.ts'
import { selfCommand } from '../self-command.ts'
import type { Backend } from '../tensor/backend.ts'

/** Fixed prompts (Qwen3 token ids: chat-like English, code, numbers) so that runs and machines compare. */
export const ACCURACY_PROMPTS: readonly (readonly number[])[] = [
  [151644, 872, 198, 3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644, 77091, 198],
  [750, 75698, 1445, 982, 262, 421, 308, 366, 220, 17, 25, 470, 308, 198],
  [16, 11, 220, 17, 11, 220, 18, 11, 220, 20, 11, 220, 23, 11, 220],
]

/** The `-exact` paths are the same kernels with `--precision exact`: activations kept in float for 4- and 8-bit weights. */
export const KERNEL_PATHS = ['avx512', 'avx2', 'avx512-exact', 'avx2-exact', 'generic', 'mlx'] as const
export type KernelPath = (typeof KERNEL_PATHS)[number]

/** One prompt decoded greedily by one path: prompt + chosen tokens, and the path's logits [steps, vocab] at the positions
 * that chose them (the last prompt position, then each decoded token's). */
export interface PathRun {
  tokens: number[]
  promptLength: number
  logits: Float32Array
}

/** The logits at every position of `tokens` (full recompute, float64). */
export type ReferenceLogits = (tokens: number[]) => Float64Array[]

export interface PathFigures {
  path: string
  positions: number
  /** mean KL(reference ‖ path) of the next-token distributions, nats */
  kl_mean: number
  /** reference's best logit − reference's logit of the token the path chose */
  gap_mean: number
  gap_max: number
  /** the reference logits' standard deviation over the vocabulary, averaged over positions (the gaps' yardstick) */
  logit_std: number
  gap_mean_share: number
  gap_max_share: number
  /** root mean square of path − reference logits, averaged over positions, and as a share of logit_std */
  rms_diff: number
  rms_diff_share: number
  top1: number
  top1_share: number
}

export type PathResult = PathFigures | { path: string; unavailable: string }

export interface AccuracyResult {
  model: string
  prompts: number
  steps: number
  results: PathResult[]
}

const argmax = (v: ArrayLike<number>): number => {
  let best = 0
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i
  return best
}

/** Decodes each prompt on `backend` (this process's kernels), `steps` tokens each, through the KV cache as serving
 * does: greedily, or teacher-forced along `forced[i]` (prompt + continuation) when given, so that paths compare at the
 * same positions instead of drifting apart after their first differing choice. */
export function decodeGreedy(
  dir: string,
  backend: Backend,
  prompts: readonly (readonly number[])[],
  steps: number,
  forced?: readonly (readonly number[])[],
): PathRun[] {
  const longest = Math.max(...prompts.map((p) => p.length))
  const stage = ModelStage.load(dir, backend, { slots: prompts.length, maxLen: longest + steps + 1 })
  const vocab = stage.config.vocabSize
  try {
    return prompts.map((prompt, slot) => {
      const tokens = [...prompt]
      const logits = new Float32Array(steps * vocab)
      let row = stage.forward({
        tokens: Int32Array.from(tokens),
        slots: new Int32Array(tokens.length).fill(slot),
        positions: Int32Array.from(tokens.keys()),
        logitRows: Int32Array.of(tokens.length - 1),
      }).logits!
      for (let s = 0; s < steps; s++) {
        logits.set(row, s * vocab)
        tokens.push(forced ? forced[slot]![tokens.length]! : argmax(row))
        if (s + 1 === steps) break
        row = stage.forward({
          tokens: Int32Array.of(tokens.at(-1)!),
          slots: Int32Array.of(slot),
          positions: Int32Array.of(tokens.length - 1),
        }).logits!
      }
      return { tokens, promptLength: prompt.length, logits }
    })
  } finally {
    stage.close()
  }
}

/** Compares a path's runs with the reference read teacher-forced over the same tokens (sequences already scored, by
 * another path that chose the same tokens, come from `memo`). */
export function scoreRuns(
  path: string,
  runs: readonly PathRun[],
  reference: ReferenceLogits,
  memo = new Map<string, Float64Array[]>(),
): PathFigures {
  let positions = 0,
    kl = 0,
    gapSum = 0,
    gapMax = 0,
    stdSum = 0,
    rmsSum = 0,
    top1 = 0
  for (const run of runs) {
    const steps = run.tokens.length - run.promptLength
    const vocab = run.logits.length / steps
    const input = run.tokens.slice(0, -1)
    const key = input.join(',')
    let want = memo.get(key)
    if (!want) memo.set(key, (want = reference(input)))
    for (let s = 0; s < steps; s++) {
      const ref = want[run.promptLength - 1 + s]!
      const got = run.logits.subarray(s * vocab, (s + 1) * vocab)
      const chosen = argmax(got)
      const best = argmax(ref)
      let mean = 0
      for (let i = 0; i < vocab; i++) mean += ref[i]!
      mean /= vocab
      let variance = 0,
        squares = 0
      for (let i = 0; i < vocab; i++) {
        variance += (ref[i]! - mean) ** 2
        squares += (got[i]! - ref[i]!) ** 2
      }
      kl += klDivergence(ref, got)
      const gap = ref[best]! - ref[chosen]!
      gapSum += gap
      gapMax = Math.max(gapMax, gap)
      stdSum += Math.sqrt(variance / vocab)
      rmsSum += Math.sqrt(squares / vocab)
      if (chosen === best) top1++
      positions++
    }
  }
  const std = stdSum / positions
  return {
    path,
    positions,
    kl_mean: round(kl / positions, 6),
    gap_mean: round(gapSum / positions, 4),
    gap_max: round(gapMax, 4),
    logit_std: round(std, 4),
    gap_mean_share: round(gapSum / positions / std, 4),
    gap_max_share: round(gapMax / std, 4),
    rms_diff: round(rmsSum / positions, 5),
    rms_diff_share: round(rmsSum / positions / std, 5),
    top1,
    top1_share: round(top1 / positions, 4),
  }
}

/** KL(p ‖ q) of the softmaxes of two logit rows, in float64. */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  const logZ = (v: ArrayLike<number>) => {
    let m = -Infinity
    for (let i = 0; i < v.length; i++) m = Math.max(m, v[i]!)
    let z = 0
    for (let i = 0; i < v.length; i++) z += Math.exp(v[i]! - m)
    return m + Math.log(z)
  }
  const zp = logZ(p),
    zq = logZ(q)
  let kl = 0
  for (let i = 0; i < p.length; i++) {
    const lp = p[i]! - zp
    kl += Math.exp(lp) * (lp - (q[i]! - zq))
  }
  return Math.max(0, kl)
}

/** How to start a process that runs `path` here, or why it cannot run. `genericShim` is a shim built without AVX2 (a
 * source checkout can make one: accuracyGenericShim). */
export function pathEnvironment(
  path: KernelPath,
  options: { cpuFlags: Set<string>; genericShim?: string; mlx: { available: boolean; reason?: string } },
): { env: Record<string, string>; backend: 'cpu' | 'mlx' } | { unavailable: string } {
  const x86 = process.arch === 'x64'
  const has = (...flags: string[]) => flags.every((f) => options.cpuFlags.has(f))
  switch (path) {
    case 'avx512':
    case 'avx512-exact':
      if (!x86 || !has('avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_vnni'))
        return { unavailable: 'this CPU has no AVX-512 VNNI' }
      return { env: {}, backend: 'cpu' }
    case 'avx2':
    case 'avx2-exact':
      if (!x86 || !has('avx2', 'fma')) return { unavailable: 'this CPU has no AVX2/FMA' }
      return { env: { DBC_NO_AVX512: '1' }, backend: 'cpu' }
    case 'generic':
      if (!x86) return { unavailable: 'the generic C build is measured on x86-64 only' }
      if (!options.genericShim || !existsSync(options.genericShim))
        return { unavailable: `no generic shim at ${options.genericShim ?? '(none given)'}` }
      return { env: { DBC_NO_AVX512: '1', DBCLUSTER_SHIM: options.genericShim }, backend: 'cpu' }
    case 'mlx':
      if (!options.mlx.available) return { unavailable: options.mlx.reason ?? 'mlx unavailable' }
      return { env: {}, backend: 'mlx' }
  }
}

/** The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere). */
export function cpuFlags(): Set<string> {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('flags'))
    return new Set(line?.split(':')[1]?.trim().split(/\s+/) ?? [])
  } catch {
    return new Set()
  }
}

/** Runs `bench accuracy --path P --emit FILE` in a child process with the path's environment and reads back its runs. */
export async function runPathInChild(
  dir: string,
  path: KernelPath,
  env: Record<string, string>,
  steps: number,
  forced?: readonly (readonly number[])[],
): Promise<PathRun[]> {
  const scratch = mkdtempSync(join(tmpdir(), 'dbc-accuracy-'))
  const file = join(scratch, 'runs')
  const force = forced ? ['--force', join(scratch, 'forced.json')] : []
  if (forced) writeFileSync(force[1]!, JSON.stringify(forced))
  try {
    const child = Bun.spawn(
      [
        ...selfCommand(),
        'bench',
        'accuracy',
        '--model',
        dir,
        '--path',
        path,
        '--steps',
        String(steps),
        '--emit',
        file,
        ...force,
      ],
      { env: { ...process.env, ...env }, stdout: 'pipe', stderr: 'pipe' },
    )
    const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()])
    if (code !== 0)
      throw new DbcError(
        'E_BENCH_PATH',
        `the ${path} run exited with ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`,
      )
    return readRuns(file)
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

/** The child's side: its runs as FILE.json (tokens) and FILE.f32 (logits, run after run). */
export function writeRuns(file: string, runs: readonly PathRun[]): void {
  writeFileSync(
    `${file}.json`,
    JSON.stringify(runs.map((r) => ({ tokens: r.tokens, promptLength: r.promptLength, n: r.logits.length }))),
  )
  const all = new Float32Array(runs.reduce((a, r) => a + r.logits.length, 0))
  let at = 0
  for (const r of runs) (all.set(r.logits, at), (at += r.logits.length))
  writeFileSync(`${file}.f32`, new Uint8Array(all.buffer))
}

export function readRuns(file: string): PathRun[] {
  const meta = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as {
    tokens: number[]
    promptLength: number
    n: number
  }[]
  const bytes = readFileSync(`${file}.f32`)
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
  let at = 0
  return meta.map((m) => {
    const logits = all.slice(at, at + m.n)
    at += m.n
    return { tokens: m.tokens, promptLength: m.promptLength, logits }
  })
}

export interface AccuracyBenchOptions {
  paths: readonly KernelPath[]
  steps: number
  reference: (dir: string) => ReferenceLogits
  genericShim?: string
  mlx: { available: boolean; reason?: string }
  onProgress?: (line: string) => void
}

/** Every requested path in its own process, each scored against the reference (built once, shared by the paths). */
export async function runAccuracyBench(dir: string, options: AccuracyBenchOptions): Promise<AccuracyResult> {
  const { steps, onProgress = () => {} } = options
  const flags = cpuFlags()
  let reference: ReferenceLogits | undefined
  const memo = new Map<string, Float64Array[]>()
  const results: PathResult[] = []
  let forced: number[][] | undefined
  for (const path of options.paths) {
    const how = pathEnvironment(path, { cpuFlags: flags, genericShim: options.genericShim, mlx: options.mlx })
    if ('unavailable' in how) {
      onProgress(`${path}: skipped (${how.unavailable})`)
      results.push({ path, unavailable: how.unavailable })
      continue
    }
    onProgress(
      `${path}: decoding ${ACCURACY_PROMPTS.length} prompts × ${steps} tokens${forced ? ' (teacher-forced)' : ' (greedy)'}`,
    )
    const runs = await runPathInChild(dir, path, how.env, steps, forced)
    // the first path's greedy tokens are the sequence every other path is teacher-forced along
    forced ??= runs.map((r) => r.tokens)
    onProgress(`${path}: scoring against the float64 reference`)
    reference ??= options.reference(dir)
    results.push(scoreRuns(path, runs, reference, memo))
  }
  return { model: dir, prompts: ACCURACY_PROMPTS.length, steps, results }
}

const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits

/** A shim built from this checkout's ffi/ without AVX2, FMA, F16C or AVX-512 code (the portable C loops), at
 * build/libdbc-generic.so; scripts/build-shim.sh rebuilds it only when ffi/ changed. Undefined outside a source checkout
 * or without a C compiler. */
export function ensureGenericShim(root: string, onProgress: (line: string) => void = () => {}): string | undefined {
  const script = join(root, 'scripts', 'build-shim.sh')
  if (process.arch !== 'x64' || !existsSync(script)) return undefined
  const out = join(root, 'build', 'libdbc-generic.so')
  const cc = join(root, 'build', 'cc-generic.sh')
  // build-shim.sh puts -march=native last; explicit -mno-* flags win over -march whatever their order
  writeFileSync(
    cc,
    '#!/bin/sh\nexec "${DBC_GENERIC_CC:-cc}" "$@" -mno-avx2 -mno-fma -mno-f16c -mno-avx512f -mno-avxvnni\n',
    {
      mode: 0o755,
    },
  )
  onProgress('generic: building (or checking) build/libdbc-generic.so')
  const built = Bun.spawnSync(['bash', script], {
    cwd: root,
    env: { ...process.env, CC: cc, DBC_SHIM_OUT: out, DBC_SHIM_MODE: 'native' },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  return built.exitCode === 0 && existsSync(out) ? out : undefined
}
