/** LocalPipeline: the Pipeline (model/pipeline.ts) over this node's stages chained in order — each in this thread or on
 * a compute thread of its own (model/stage-runner.ts); monolithic = one stage. */
import { DbcError } from '../errors.ts'
import type { Pipeline, PrefixReuse } from '../model/pipeline.ts'
import type { RowSampling, SampledToken } from '../model/sampler.ts'
import type { StageInput, StageOutput } from '../model/shard.ts'
import type { StageRunner } from '../model/stage-runner.ts'

export type { Pipeline }

export class LocalPipeline implements Pipeline {
  readonly prefix?: PrefixReuse

  constructor(
    readonly stages: readonly StageRunner[],
    options: { prefix?: PrefixReuse } = {},
  ) {
    this.prefix = options.prefix
    if (!stages.length) throw new DbcError('E_PIPELINE', 'a pipeline needs at least one stage')
    for (let i = 1; i < stages.length; i++) {
      if (stages[i]!.range.lo !== stages[i - 1]!.range.hi)
        throw new DbcError('E_PIPELINE', `stage ${i} does not start where stage ${i - 1} ends`)
    }
    if (!stages[0]!.range.first || !stages.at(-1)!.range.last)
      throw new DbcError('E_PIPELINE', 'stages must cover the model from the embedding to the head')
  }

  get vocabSize(): number {
    return this.stages[0]!.config.vocabSize
  }

  get maxLen(): number {
    return Math.min(...this.stages.map((s) => s.cache.maxLen))
  }

  openSequence(): number {
    const slot = this.stages[0]!.cache.allocate()
    for (const s of this.stages.slice(1)) s.cache.claim(slot)
    return slot
  }

  closeSequence(slot: number): void {
    for (const s of this.stages) s.cache.release(slot)
  }

  async step(input: StageInput): Promise<Float32Array> {
    return (await this.#chain(input)).logits!
  }

  async sample(input: StageInput, rows: readonly RowSampling[]): Promise<SampledToken[]> {
    return (await this.#chain({ ...input, output: 'reused-logits' }, rows)).tokens!
  }

  /** Every stage in order; the last samples `rows` where its logits are, when given. */
  async #chain(input: StageInput, rows?: readonly RowSampling[]): Promise<StageOutput & { tokens?: SampledToken[] }> {
    let out: StageOutput & { tokens?: SampledToken[] } = {}
    for (const [i, stage] of this.stages.entries()) {
      const hop =
        i === 0
          ? input
          : {
              slots: input.slots,
              positions: input.positions,
              hidden: out.hidden,
              logitRows: input.logitRows,
              output: input.output,
            }
      out = await stage.run(hop, rows)
    }
    return out
  }
}
