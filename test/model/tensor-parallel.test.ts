/** Tensor parallel (issue 9): each rank loads its rows (q/k/v/gate/up) or columns (o/down, packed words and groups) of
 * every layer, the sharded-to-all linears sum before their bias, and 2 ranks over MLX ring on loopback give the
 * single-process logits and greedy tokens. The MLX part is skipped, with the reason, where mlx-c is not installed. */
import { describe, expect, test } from 'bun:test'
import { shardConfig } from '../../src/model/tensor-parallel.ts'
import { join } from 'node:path'
import { openCheckpoint, readJson } from '../../src/model/checkpoint.ts'
import { readModelConfig, ModelStage } from '../../src/model/shard.ts'
import { applyLinear, Weights, type LinearWeight } from '../../src/model/weights.ts'
import { parseQuantization } from '../../src/model/quantization.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import type { Tensor } from '../../src/tensor/backend.ts'
import type { DecoderConfig } from '../../src/model/config.ts'
import { probe } from '../../src/tensor/mlx.ts'
import type { TensorParallel } from '../../src/tensor/tensor-parallel.ts'
import { greedy } from '../support/greedy.ts'
import { synthModel } from '../support/synth-models.ts'
import { maxAbs, maxAbsDiff } from '../reference/kernels.ts'

const cpu = openCpuBackend({ threads: 1 })
const loneRank = (rank: number, size: number): TensorParallel => ({ rank, size, allSum: (x) => x })

function weightsOf(dir: string, tp?: TensorParallel): Weights {
  const raw = readJson(join(dir, 'config.json'), 'config.json')
  return new Weights({ checkpoint: openCheckpoint(dir), backend: cpu, quantization: parseQuantization(raw), tp })
}

/** The tensors of a linear as bytes, reshaped to [rows, bytes per row]. */
function rowsOf(t: Tensor): Uint8Array[] {
  const bytes = cpu.toBytes(t)
  const rows = t.shape.length === 1 ? 1 : t.shape[0]!
  const per = bytes.length / rows
  return Array.from({ length: rows }, (_, i) => bytes.subarray(i * per, (i + 1) * per))
}
const parts = (w: LinearWeight): Tensor[] =>
  w.kind === 'dense' ? [w.weight] : [w.matrix.weight, w.matrix.scales, w.matrix.biases!]
const joinRows = (a: Uint8Array[], b: Uint8Array[]) => [...a, ...b].map((r) => Array.from(r))
const joinColumns = (a: Uint8Array[], b: Uint8Array[]) => a.map((r, i) => [...r, ...b[i]!])

for (const dtype of ['bf16', 'q4'] as const)
  test(`${dtype}: rank 0 and rank 1 together hold exactly the whole weight (rows for q/gate, packed columns and groups for o/down)`, async () => {
    const dir = await synthModel('qwen2', dtype)
    const c = readModelConfig(dir)
    const layer = 'model.layers.1'
    const whole = weightsOf(dir)
    const [r0, r1] = [0, 1].map((r) => weightsOf(dir, loneRank(r, 2)))
    const q = c.numHeads * c.headDim
    // out: rows (and the bias)
    const full = whole.linear(`${layer}.self_attn.q_proj`, q, c.hiddenSize, { bias: true, shard: 'out' })
    const halves = [r0, r1].map((w) =>
      w!.linear(`${layer}.self_attn.q_proj`, q / 2, c.hiddenSize, { bias: true, shard: 'out' }),
    )
    parts(full).forEach((t, i) =>
      expect(joinRows(rowsOf(parts(halves[0]!)[i]!), rowsOf(parts(halves[1]!)[i]!))).toEqual(
        rowsOf(t).map((r) => Array.from(r)),
      ),
    )
    expect([...cpu.toFloat32(halves[0]!.bias!), ...cpu.toFloat32(halves[1]!.bias!)]).toEqual([
      ...cpu.toFloat32(full.bias!),
    ])
    expect(halves[0]!.allSum).toBeUndefined()
    // in: columns; the summing function comes with it
    const down = whole.linear(`${layer}.mlp.down_proj`, c.hiddenSize, c.intermediateSize, { shard: 'in' })
    const cols = [r0, r1].map((w) =>
      w!.linear(`${layer}.mlp.down_proj`, c.hiddenSize, c.intermediateSize / 2, { shard: 'in' }),
    )
    parts(down).forEach((t, i) =>
      expect(joinColumns(rowsOf(parts(cols[0]!)[i]!), rowsOf(parts(cols[1]!)[i]!))).toEqual(
        rowsOf(t).map((r) => Array.from(r)),
      ),
    )
    expect(typeof cols[0]!.allSum).toBe('function')
  })

for (const dtype of ['bf16', 'q4'] as const)
  test(`${dtype}: a fused projection split block by block — each rank holds its rows of q, of k and of v`, async () => {
    // Qwen3.5's in_proj_qkv is q | k | v; a plain split would give rank 0 all of q and half of k
    const dir = await synthModel('qwen3_5', dtype, { fullAttentionInterval: 2 })
    const c = readModelConfig(dir) as DecoderConfig & {
      linearKeyHeads: number
      linearKeyDim: number
      linearValueHeads: number
      linearValueDim: number
    }
    const name = 'language_model.model.layers.0.linear_attn.in_proj_qkv'
    const kd = c.linearKeyHeads * c.linearKeyDim,
      vd = c.linearValueHeads * c.linearValueDim
    const whole = parts(weightsOf(dir).linear(name, 2 * kd + vd, c.hiddenSize)).map(rowsOf)
    const halves = [0, 1].map((r) =>
      parts(
        weightsOf(dir, loneRank(r, 2)).linear(name, kd + vd / 2, c.hiddenSize, {
          shard: 'out',
          segments: [kd / 2, kd / 2, vd / 2],
        }),
      ).map(rowsOf),
    )
    whole.forEach((rows, i) => {
      // per rank: q/2, k/2, v/2 rows, in that order; every row of the whole once
      const blocks = (r: number) => {
        const mine = halves[r]![i]!
        return [mine.slice(0, kd / 2), mine.slice(kd / 2, kd), mine.slice(kd)]
      }
      const [a, b] = [blocks(0), blocks(1)]
      const rebuilt = [...a[0]!, ...b[0]!, ...a[1]!, ...b[1]!, ...a[2]!, ...b[2]!].map((row) => Array.from(row))
      expect(rebuilt).toEqual(rows.map((row) => Array.from(row)))
    })
  })

test("a rank's weight figures count its share of the sharded tensors", async () => {
  const dir = await synthModel('llama', 'q4')
  const whole = ModelStage.load(dir, cpu, { slots: 1, maxLen: 8 })
  const half = ModelStage.load(dir, cpu, { slots: 1, maxLen: 8, tp: loneRank(1, 2) })
  // the embedding (tied head) and the norms stay whole; every layer's linears halve, and so does the KV cache
  expect(half.weightBytes).toBeLessThan(whole.weightBytes)
  expect(half.weightBytes).toBeGreaterThan(whole.weightBytes / 2)
  expect(half.cache.bytes).toBe(whole.cache.bytes / 2)
  whole.close()
  half.close()
})

test('a sharded-to-all linear sums its partial outputs first and adds the bias once', () => {
  const x = cpu.fromFloat32(Float32Array.of(1, 2), [1, 2])
  const weight = cpu.fromFloat32(Float32Array.of(1, 0, 0, 1, 1, 1), [3, 2])
  const bias = cpu.fromFloat32(Float32Array.of(10, 20, 30), [3])
  // a stand-in group of two identical ranks: the sum doubles each partial output
  const y = applyLinear(cpu, { kind: 'dense', weight, bias, allSum: (t) => cpu.scale(t, 2) }, x)
  expect(Array.from(cpu.toFloat32(y))).toEqual([12, 24, 36])
})

test('a split that does not divide the heads, or an architecture without tensor parallel, is refused', async () => {
  const llama = await synthModel('llama', 'f32')
  expect(() => ModelStage.load(llama, cpu, { slots: 1, maxLen: 8, tp: loneRank(0, 3) })).toThrow(
    'attention heads (4) do not split into 3 equal parts',
  )
  // every family here splits; one that does not mark its linears is refused by name
  const config = readModelConfig(llama)
  expect(() => shardConfig(config, loneRank(0, 2), 'future_family', {})).toThrow(
    "tensor parallel is not built for model_type 'future_family'",
  )
})

const mlx = probe()

/** Both ranks as real processes over MLX ring on loopback (test/support/tp-rank.ts). */
async function twoRanks(dir: string, steps: number, mode: 'same' | 'lead' = 'same') {
  const ports = [0, 1].map(() => {
    const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const port = l.port
    l.stop(true)
    return port
  })
  const hostfile = join(dir, `hostfile-${ports[0]}.json`)
  await Bun.write(hostfile, JSON.stringify(ports.map((p) => [`127.0.0.1:${p}`])))
  const script = new URL('../support/tp-rank.ts', import.meta.url).pathname
  const procs = [0, 1].map((r) =>
    Bun.spawn([process.execPath, script, dir, String(r), hostfile, String(steps), mode], {
      stdout: 'pipe',
      stderr: 'pipe',
    }),
  )
  return Promise.all(
    procs.map(async (p) => {
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()])
      expect({ rc: await p.exited, err }).toMatchObject({ rc: 0 })
      const r = JSON.parse(out.trim().split('\n').at(-1)!)
      return { ...r, first: Float32Array.from(r.first ?? []) } as {
        rank: number
        size: number
        first: Float32Array
        out: number[]
        again?: number[]
        followed?: number
      }
    }),
  )
}

describe.skipIf(!mlx.available)(
  `2 ranks over MLX ring == 1 process${mlx.available ? '' : ` (skipped: ${mlx.reason})`}`,
  () => {
    for (const [arch, dtype] of [
      ['llama', 'f32'],
      ['qwen2', 'bf16'],
      ['qwen3', 'q4'],
    ] as const)
      test(`${arch} ${dtype}`, async () => {
        const { openMlxBackend } = await import('../../src/tensor/mlx.ts')
        const dir = await synthModel(arch, dtype)
        const single = await greedy(ModelStage.load(dir, openMlxBackend(), { slots: 1, maxLen: 32 }), 6)
        const ranks = await twoRanks(dir, 6)
        expect(ranks.map((r) => [r.rank, r.size])).toEqual([
          [0, 2],
          [1, 2],
        ])
        // the ring's sum reaches both ranks bit for bit
        expect(Array.from(ranks[1]!.first)).toEqual(Array.from(ranks[0]!.first))
        // splitting the inner products changes only the order of the additions
        expect(maxAbsDiff(ranks[0]!.first, single.first) / maxAbs(single.first)).toBeLessThan(
          dtype === 'f32' ? 1e-5 : 2e-2,
        )
        expect(ranks[0]!.out).toEqual(single.out)
      }, 120_000)

    test('rank 0 drives the engine through TensorParallelPipeline and rank 1 follows its opens, steps and closes', async () => {
      const { openMlxBackend } = await import('../../src/tensor/mlx.ts')
      const dir = await synthModel('qwen3', 'bf16')
      const single = await greedy(ModelStage.load(dir, openMlxBackend(), { slots: 1, maxLen: 32 }), 5)
      const [lead, follower] = await twoRanks(dir, 5, 'lead')
      expect(lead!.out).toEqual(single.out)
      expect(lead!.again).toEqual(single.out)
      expect(maxAbsDiff(lead!.first, single.first) / maxAbs(single.first)).toBeLessThan(2e-2)
      // two sequences of a prefill and 5 decode steps each
      expect(follower!.followed).toBe(12)
    }, 120_000)
  },
)
