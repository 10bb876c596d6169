/** LocalPipeline: the Pipeline (model/pipeline.ts) over in-process stages chained in order; monolithic = one stage. */
import { DbcError } from '../errors.ts'
import type { Pipeline, PrefixReuse } from '../model/pipeline.ts'
import { sampleRows, type RowSampling, type SampledToken } from '../model/sampler.ts'
import type { ModelStage, StageInput, StageOutput } from '../model/shard.ts'

export type { Pipeline }

export class LocalPipeline implements Pipeline {
  readonly prefix?: PrefixReuse

  constructor(
    readonly stages: readonly ModelStage[],
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
    let out: StageOutput = {}
    for (const [i, stage] of this.stages.entries()) {
      out = stage.forward(
        i === 0
          ? input
          : {
              slots: input.slots,
              positions: input.positions,
              hidden: out.hidden,
              logitRows: input.logitRows,
              output: input.output,
            },
      )
    }
    return out.logits!
  }

  async sample(input: StageInput, rows: readonly RowSampling[]): Promise<SampledToken[]> {
    // a middle prefill chunk samples nothing, but the head still needs a row to compute
    if (rows.length === 0)
      return (await this.step({ ...input, logitRows: Int32Array.of(0), output: 'reused-logits' }), [])
    return sampleRows(await this.step({ ...input, output: 'reused-logits' }), this.vocabSize, rows)
  }
}
