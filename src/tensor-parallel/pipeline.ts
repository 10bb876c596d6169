/** Tensor parallel behind the Pipeline seam: rank 0 runs the engine (scheduler, sampling, API) over its shard and
 * sends every sequence open/close and every step's rows to the other ranks first; they replay them on their shards, so
 * each forward meets the others in the same all_sums. The followers need no prompt, seed or request of their own.
 * Where lm_head is split by vocabulary and the group can gather bytes, a sampling step also carries the rows' sampling
 * parameters: every rank summarizes its slice of the logits and rank 0 merges the summaries (model/split-sampling.ts). */
import { Reader, Writer } from '../cluster/binary-codec.ts'
import { readSampling, writeSampling } from '../cluster/step-messages.ts'
import { DbcError } from '../errors.ts'
import type { Pipeline } from '../model/pipeline.ts'
import { sampleRows, type RowSampling, type SampledToken } from '../model/sampler.ts'
import type { ModelStage, StageInput } from '../model/shard.ts'
import { mergeSlices, summarizeSlice, summaryLimit } from '../model/split-sampling.ts'
import { LocalPipeline } from '../engine/pipeline.ts'

/** Rank 0's bytes on every rank of the TP group (MlxGroup.broadcast). */
export interface StepBroadcast {
  readonly rank: number
  broadcast(bytes?: Uint8Array): Uint8Array
  /** Rank 0: its own and every other rank's bytes, by rank; the others send theirs and get null (SealedTpGroup). */
  gatherBytes?(mine: Uint8Array, maxBytes: number): Uint8Array[] | null
  /** A clean stop is under way: ranks closing are no longer a failure (MlxGroup's rank watchdog). */
  disarmWatchdog?(): void
  /** The failure that ended the group (a rank lost) until rank 0 restores it (SealedTpGroup). */
  readonly failure?: Error
  /** Milliseconds spent in exchanges so far (SealedTpGroup). */
  readonly exchangeMs?: number
}

const OP = { open: 1, close: 2, step: 3, stop: 4, sample: 5 } as const

/** u32 op | ints tokens, slots, positions | u32 1 + ints logitRows, or u32 0 (every row) | the rows' sampling, one per
 * logit row (cluster/step-messages.ts's block; none: no logits at all). */
function encodeSampleStep(input: StageInput, rows: readonly RowSampling[]): Uint8Array {
  const w = new Writer()
  w.u32(OP.sample)
  w.ints(input.tokens!)
  w.ints(input.slots)
  w.ints(input.positions)
  w.u32(input.logitRows ? 1 : 0)
  if (input.logitRows) w.ints(input.logitRows)
  writeSampling(w, rows)
  return w.join()
}

function decodeSampleStep(bytes: Uint8Array): { input: StageInput; rows: RowSampling[] } {
  const r = new Reader(bytes, 'tensor-parallel sampling step')
  r.u32()
  const tokens = r.ints()
  const slots = r.ints()
  const positions = r.ints()
  const logitRows = r.u32() ? r.ints() : undefined
  const rows = readSampling(r) ?? []
  r.end()
  if (rows.length && rows.length !== (logitRows?.length ?? slots.length))
    throw new RangeError('tensor-parallel sampling step: sampling rows differ from logit rows')
  return { input: { tokens, slots, positions, logitRows }, rows }
}

/** One rank's summary of its vocabulary slice for `rows` (the logits of its split head). */
function summarize(rank: number, logits: Float32Array, rows: readonly RowSampling[]): Uint8Array {
  const width = logits.length / rows.length
  return summarizeSlice(logits, rank * width, width, rows)
}

/** [op, rows, logitRows (-1: all), tokens…, slots…, positions…, logitRows…] as i32. */
function encodeStep(input: StageInput): Uint8Array {
  const rows = input.slots.length
  const logits = input.logitRows ? input.logitRows.length : -1
  const out = new Int32Array(3 + rows * 3 + Math.max(0, logits))
  out.set([OP.step, rows, logits])
  out.set(input.tokens!, 3)
  out.set(input.slots, 3 + rows)
  out.set(input.positions, 3 + 2 * rows)
  if (input.logitRows) out.set(input.logitRows, 3 + 3 * rows)
  return new Uint8Array(out.buffer)
}

function decodeStep(m: Int32Array): StageInput {
  const [, rows, logits] = m as unknown as [number, number, number]
  const at = (i: number, n: number) => m.slice(3 + i * rows, 3 + i * rows + n)
  return {
    tokens: at(0, rows),
    slots: at(1, rows),
    positions: at(2, rows),
    logitRows: logits < 0 ? undefined : m.slice(3 + 3 * rows, 3 + 3 * rows + logits),
  }
}

const message = (...values: number[]) => new Uint8Array(Int32Array.from(values).buffer)

/** Rank 0: the engine's Pipeline over this rank's shard (one stage holding every layer), mirrored to the followers. */
export class TensorParallelPipeline implements Pipeline {
  readonly #local: LocalPipeline
  #stopped = false
  /** The slots open on rank 0 (and so on every rank while the group holds). */
  readonly #open = new Set<number>()

  /** Sampling from the ranks' summaries of their vocabulary slices, not from gathered logits. */
  readonly splitSampling: boolean

  constructor(
    private readonly stage: ModelStage,
    private readonly group: StepBroadcast,
    /** Each step's time in the exchanges, in seconds, where the group measures it. */
    private readonly onExchange?: (seconds: number) => void,
  ) {
    if (group.rank !== 0)
      throw new DbcError(
        'E_TP_RANK',
        'only rank 0 drives a tensor-parallel pipeline',
        'run followTensorParallel on the other ranks',
      )
    this.#local = new LocalPipeline([stage])
    this.splitSampling = stage.model.headSplit === true && group.gatherBytes !== undefined
  }

  get vocabSize(): number {
    return this.#local.vocabSize
  }

  get maxLen(): number {
    return this.#local.maxLen
  }

  #send(bytes: Uint8Array): void {
    if (this.#stopped) throw new DbcError('E_TP_STOPPED', 'the tensor-parallel group was stopped')
    this.group.broadcast(bytes)
  }

  /** A step or a broadcast that failed because a rank was lost: a lost stage, which the scheduler suspends its
   * requests for (they re-prefill once the group is whole again: see resync). */
  #lostRank<T>(run: () => T): T {
    try {
      return run()
    } catch (error) {
      throw this.#asLost(error)
    }
  }

  #asLost(error: unknown): unknown {
    const failure = this.group.failure
    return failure
      ? new DbcError(
          'E_STAGE_LOST',
          `tensor-parallel rank lost: ${failure.message}`,
          'restart the lost rank: it rejoins and the requests resume',
        )
      : error
  }

  openSequence(): number {
    const slot = this.#local.openSequence()
    this.#open.add(slot)
    // while the group is down the slot opens here only; resync opens it on the ranks that rejoin
    if (!this.group.failure) this.#lostRank(() => this.#send(message(OP.open, slot)))
    return slot
  }

  closeSequence(slot: number): void {
    this.#open.delete(slot)
    if (!this.group.failure) this.#lostRank(() => this.#send(message(OP.close, slot)))
    this.#local.closeSequence(slot)
  }

  /** Rank 0, once the group is restored with ranks that start empty: they claim every slot open here. The requests in
   * those slots re-prefill (the scheduler's resume), so the new ranks' caches fill again. */
  resync(): void {
    for (const slot of [...this.#open].sort((a, b) => a - b)) this.#send(message(OP.open, slot))
  }

  async step(input: StageInput): Promise<Float32Array> {
    if (!input.tokens) throw new DbcError('E_STEP', 'a tensor-parallel step starts from token ids')
    try {
      this.#send(encodeStep(input))
      return await this.#local.step(input)
    } catch (error) {
      throw this.#asLost(error)
    }
  }

  async sample(input: StageInput, rows: readonly RowSampling[]): Promise<SampledToken[]> {
    const before = this.group.exchangeMs
    try {
      if (this.splitSampling) return this.#lostRank(() => this.#sampleSplit(input, rows))
      // a middle prefill chunk samples nothing, but the head still needs a row to compute
      if (rows.length === 0)
        return (await this.step({ ...input, logitRows: Int32Array.of(0), output: 'reused-logits' }), [])
      return sampleRows(await this.step({ ...input, output: 'reused-logits' }), this.vocabSize, rows)
    } finally {
      if (before !== undefined && this.onExchange && !this.group.failure)
        this.onExchange((this.group.exchangeMs! - before) / 1000)
    }
  }

  #sampleSplit(input: StageInput, rows: readonly RowSampling[]): SampledToken[] {
    if (!input.tokens) throw new DbcError('E_STEP', 'a tensor-parallel step starts from token ids')
    this.#send(encodeSampleStep(input, rows))
    // a middle prefill chunk samples nothing: no rank runs the head
    const { logits } = this.stage.forward({
      ...input,
      output: rows.length === 0 ? 'none' : 'vocab-slice',
    })
    if (rows.length === 0) return []
    const width = logits!.length / rows.length
    const summaries = this.group.gatherBytes!(summarize(0, logits!, rows), summaryLimit(rows.length, width))!
    return mergeSlices(summaries, width, rows)
  }

  /** Ends the followers' loops (they return from followTensorParallel). */
  stop(): void {
    if (this.#stopped) return
    this.group.disarmWatchdog?.()
    this.group.broadcast(message(OP.stop))
    this.#stopped = true
  }
}

/** Ranks > 0: replays rank 0's opens, closes and steps on this rank's shard until rank 0 stops; returns the steps run. */
export function followTensorParallel(stage: ModelStage, group: StepBroadcast): number {
  if (group.rank === 0) throw new DbcError('E_TP_RANK', 'rank 0 drives the group; only the other ranks follow')
  let steps = 0
  for (;;) {
    const bytes = group.broadcast()
    const m = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    switch (m[0]) {
      case OP.open:
        stage.cache.claim(m[1]!)
        break
      case OP.close:
        stage.cache.release(m[1]!)
        break
      case OP.step:
        stage.forward({ ...decodeStep(m), output: 'follower' })
        steps++
        break
      case OP.sample: {
        if (!group.gatherBytes)
          throw new DbcError(
            'E_TP_PROTOCOL',
            'rank 0 sent a sampling step over a group that cannot gather',
            'run the same dbcluster release on every rank',
          )
        const { input, rows } = decodeSampleStep(bytes)
        const { logits } = stage.forward({ ...input, output: rows.length === 0 ? 'none' : 'vocab-slice' })
        if (rows.length) group.gatherBytes(summarize(group.rank, logits!, rows), 0)
        steps++
        break
      }
      case OP.stop:
        group.disarmWatchdog?.()
        return steps
      default:
        throw new DbcError(
          'E_TP_PROTOCOL',
          `unknown tensor-parallel message ${m[0]}`,
          'run the same dbcluster release on every rank',
        )
    }
  }
}
