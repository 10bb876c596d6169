/** A pipeline stage: the model's layers [lo, hi) loaded from a checkpoint (only the tensors they need), with its KV cache.
 * Token ids or hidden states in; hidden states or logits out. Monolithic = one stage holding everything. */
import { DbcError } from '../errors.ts'
import type { Backend, Tensor } from '../tensor/backend.ts'
import type { Architecture, LayerRange } from './architecture.ts'
import { openCheckpoint, readJson } from './checkpoint.ts'
import type { DecoderConfig } from './config.ts'
import { CheckpointError } from './errors.ts'
import { fullLayers, KvCache } from './kv-cache.ts'
import { architectureFor } from './registry.ts'
import type { RowSampling } from './sampler.ts'
import { runStageNow, type StageRun, type StageRunner } from './stage-runner.ts'
import { shardConfig } from './tensor-parallel.ts'
import { Weights } from './weights.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'
import { join } from 'node:path'

export interface StageOptions {
  /** Layer range; default: every layer (monolithic). */
  lo?: number
  hi?: number
  /** Concurrent sequences (KV slots) and the longest sequence a slot holds. */
  slots?: number
  maxLen?: number
  /** Tensor parallel: this process holds rank `tp.rank` of `tp.size` shards of every layer (default: the whole layer). */
  tp?: TensorParallel
  /** Keys and values cached as (default: the backend's kvDtype, f16 on cpu); f32 keeps them exactly as computed. */
  kvDtype?: 'f32' | 'f16'
}

export interface StageInput {
  /** Token ids (first stage) or hidden states [rows, hidden] (later stages). */
  tokens?: Int32Array
  hidden?: Float32Array
  slots: Int32Array
  positions: Int32Array
  /** On the last stage: which rows get logits (default: all). */
  logitRows?: Int32Array
  /** What the last stage gives back (default 'logits'):
   * - 'logits': a new array of logits [logitRows, vocab];
   * - 'reused-logits': the same, in a buffer the stage keeps for the next step too, valid only until its next forward
   *   (for a caller that samples at once: a step's logits are megabytes, and a new buffer each step is that much memory
   *   faulted in anew);
   * - 'vocab-slice': where lm_head is split by vocabulary, this rank's slice [logitRows, vocab / ranks] in the kept
   *   buffer, not gathered (model/split-sampling.ts);
   * - 'none': no logits, and no rank runs the head (a prefill chunk that samples nothing);
   * - 'follower': no logits on a tensor-parallel follower (rank 0 samples); it still runs the head where lm_head is
   *   split by vocabulary, for rank 0's gather. Either way the layers run inside the step, for their all_sums to meet. */
  output?: StageOutputKind
}

export type StageOutputKind = 'logits' | 'reused-logits' | 'vocab-slice' | 'none' | 'follower'

export interface StageOutput {
  /** [rows, hidden] from a stage that is not last. */
  hidden?: Float32Array
  /** [logitRows, vocab] from the last stage. */
  logits?: Float32Array
}

/** Reads config.json and parses it with its architecture's rules (no weights touched). */
export function readModelConfig(dir: string): DecoderConfig {
  const raw = readJson(join(dir, 'config.json'), 'config.json')
  return architectureFor(raw.model_type).parseConfig(raw)
}

export class ModelStage implements StageRunner {
  readonly cache: KvCache
  /** Where 'reused-logits' and 'vocab-slice' steps put their logits. */
  #logits = new Float32Array(0)

  private constructor(
    readonly config: DecoderConfig,
    readonly range: LayerRange,
    readonly model: Architecture,
    readonly backend: Backend,
    options: Required<Pick<StageOptions, 'slots' | 'maxLen' | 'kvDtype'>>,
    readonly weightBytes: number,
    /** Weight bytes one batch-1 decode step reads: the embedding table only where it is the tied lm_head, and of an expert
     * stack only the share one token routes to (a larger batch may read more experts). */
    readonly streamedBytes: number,
    private readonly weightTensors: readonly Tensor[],
  ) {
    const specs = config.layerCaches ?? fullLayers(config.numLayers, config.numKvHeads, config.headDim)
    this.cache = new KvCache(backend, specs.slice(range.lo, range.hi), options.slots, options.maxLen, options.kvDtype)
  }

  static load(dir: string, backend: Backend, options: StageOptions = {}): ModelStage {
    const raw = readJson(join(dir, 'config.json'), 'config.json')
    const arch = architectureFor(raw.model_type)
    const tp = options.tp
    const config = tp ? shardConfig(arch.parseConfig(raw), tp, String(raw.model_type), arch) : arch.parseConfig(raw)
    const lo = options.lo ?? 0
    const hi = options.hi ?? config.numLayers
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && hi <= config.numLayers && lo < hi)) {
      throw new DbcError(
        'E_STAGE_RANGE',
        `layer range [${lo}, ${hi}) is not inside the model's ${config.numLayers} layers`,
      )
    }
    const range: LayerRange = { lo, hi, first: lo === 0, last: hi === config.numLayers }
    const owned = (name: string) => stagePrefixes(range, config).some((p) => name === p || name.startsWith(`${p}.`))
    const checkpoint = openCheckpoint(dir, owned)
    const weights = new Weights({ checkpoint, backend, quantization: config.quantization, tp })
    const model = arch.createModel(config, weights, range, backend)
    const leftover = weights.unclaimed(stagePrefixes(range, config))
    if (leftover.length) {
      throw new CheckpointError(
        'E_CKPT_UNCLAIMED',
        `${leftover.length} tensor(s) in ${dir} match no parameter of ${String(raw.model_type)}: ${leftover.slice(0, 5).join(', ')}${leftover.length > 5 ? ', …' : ''}`,
        'the checkpoint is for another architecture or config.json is wrong',
      )
    }
    let weightBytes = 0
    let streamedBytes = 0
    const tiedHead = range.last && config.tieWordEmbeddings
    const embedding = `${config.weightPrefix ?? ''}model.embed_tokens.`
    for (const name of weights.claimed) {
      const e = checkpoint.tensors.get(name)!
      // a tensor-parallel rank holds 1/N of its sharded tensors
      const bytes = (e.end - e.begin) / (weights.parts.get(name) ?? 1)
      weightBytes += bytes
      const share = config.experts && name.includes(config.experts.path) ? config.experts.share : 1
      if (tiedHead || !name.startsWith(embedding)) streamedBytes += bytes * share
    }
    return new ModelStage(
      config,
      range,
      model,
      backend,
      { slots: options.slots ?? 4, maxLen: options.maxLen ?? 2048, kvDtype: options.kvDtype ?? backend.kvDtype },
      weightBytes,
      streamedBytes,
      weights.loaded,
    )
  }

  /** Runs one step for the given rows. All intermediate tensors are freed before it returns. */
  forward(input: StageInput): StageOutput {
    const b = this.backend
    const rows = input.slots.length
    if (input.positions.length !== rows)
      throw new DbcError('E_STEP', `step has ${rows} slots but ${input.positions.length} positions`)
    for (const p of input.positions) {
      if (p >= this.cache.maxLen)
        throw new DbcError(
          'E_CONTEXT',
          `position ${p} exceeds the context of ${this.cache.maxLen} tokens`,
          'shorten the prompt or max_tokens',
        )
    }
    return b.scope(() => {
      let h
      if (this.range.first) {
        if (!input.tokens || input.tokens.length !== rows)
          throw new DbcError('E_STEP', 'the first stage needs one token id per row')
        // an id past the table would read outside the embedding: refuse it here, before the backend gathers
        for (const id of input.tokens) {
          if (id < 0 || id >= this.config.vocabSize)
            throw new DbcError(
              'E_TOKEN',
              `token id ${id} is outside the model's vocabulary of ${this.config.vocabSize}`,
            )
        }
        h = this.model.embed(b.fromInt32(input.tokens, [rows]))
      } else {
        if (!input.hidden || input.hidden.length !== rows * this.config.hiddenSize) {
          throw new DbcError(
            'E_STEP',
            `stage ${this.range.lo}..${this.range.hi} needs hidden states [${rows}, ${this.config.hiddenSize}]`,
          )
        }
        h = b.fromFloat32(input.hidden, [rows, this.config.hiddenSize])
      }
      // after the inputs are checked, so a refused step leaves recurrent positions as they were
      this.cache.admitRows(input.slots, input.positions)
      h = this.#forwardLayers(h, input)
      if (!this.range.last) return { hidden: b.toFloat32(h) }
      const output = input.output ?? 'logits'
      // a follower whose rank holds part of a split lm_head computes it for rank 0, and nothing else; the layers are
      // read here all the same, as a lazy backend (mlx) would otherwise run their all_sums later, out of step with rank 0
      if (output === 'none' || (output === 'follower' && !this.model.headSplit))
        return (b.toFloat32(b.slice(h, 0, 0, 1)), {})
      if (input.logitRows) h = b.embedding(h, b.fromInt32(input.logitRows, [input.logitRows.length]))
      const logits = this.model.head(h, output === 'vocab-slice')
      if (output === 'follower') return {}
      if (output === 'logits') return { logits: b.toFloat32(logits) }
      const n = logits.shape.reduce((a, d) => a * d, 1)
      if (this.#logits.length < n) this.#logits = new Float32Array(n)
      return { logits: b.toFloat32(logits, this.#logits) }
    })
  }

  /** StageRunner's step, in this thread (it blocks the event loop for as long as the step computes). */
  async run(input: StageInput, sampling?: readonly RowSampling[]): Promise<StageRun> {
    return runStageNow(this, input, sampling)
  }

  /** The layers over all rows, in consecutive chunks when the step carries more rows than a ring cache holds keys for
   * (rows attend only to positions at or before their own, so running them in order gives the same result). */
  #forwardLayers(hidden: Tensor, input: StageInput): Tensor {
    const b = this.backend
    const rows = input.slots.length
    const chunk = this.cache.maxStepRows
    const run = (h: Tensor, lo: number, hi: number) =>
      this.model.forwardLayers(h, {
        slots: b.fromInt32(input.slots.subarray(lo, hi), [hi - lo]),
        positions: b.fromInt32(input.positions.subarray(lo, hi), [hi - lo]),
        cache: this.cache,
      })
    if (rows <= chunk) return run(hidden, 0, rows)
    let out: Tensor | undefined
    for (let lo = 0; lo < rows; lo += chunk) {
      const hi = Math.min(rows, lo + chunk)
      const part = run(b.slice(hidden, 0, lo, hi), lo, hi)
      out = out ? b.concat(out, part, 0) : part
    }
    return out!
  }

  /** Frees the KV cache and the weight handles; the stage cannot run afterwards. */
  close(): void {
    this.cache.close()
    for (const t of this.weightTensors) this.backend.free(t)
  }
}

/** Checkpoint key prefixes a stage owns: its layers, plus embedding (first, or tied head) and norm/lm_head (last). */
export function stagePrefixes(range: LayerRange, config: DecoderConfig): string[] {
  const root = config.weightPrefix ?? ''
  const prefixes: string[] = []
  if (range.first || (range.last && config.tieWordEmbeddings)) prefixes.push(`${root}model.embed_tokens`)
  for (let i = range.lo; i < range.hi; i++) prefixes.push(`${root}model.layers.${i}`)
  if (range.last) prefixes.push(`${root}model.norm`, `${root}lm_head`)
  return prefixes
}
