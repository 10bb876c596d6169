/** How a sealed tensor-parallel group comes back after a rank is lost. Rank 0 goes degraded (new requests get 503, the
 * running ones wait out the resume window) and meets the ranks again as at the start; ranks > 0 that lost rank 0 keep
 * their model loaded, free their slots and meet it again. Once whole, rank 0 opens the slots still in use on the new
 * ranks and the waiting requests re-prefill and go on where they stopped. */
import { writeSync } from 'node:fs'
import { consola } from 'consola'
import type { SealedTpGroup, TpChannel } from './sealed-group.ts'
import type { Scheduler } from '../engine/scheduler.ts'
import { followTensorParallel, type TensorParallelPipeline } from './pipeline.ts'
import type { ModelStage } from '../model/shard.ts'

/** A meeting of the ranks, as startSealedTensorParallel's `rejoin` runs it. */
type Meeting = (announce: boolean) => Promise<TpChannel[]>

/** A new meeting of the sealed group, tried until it happens (each try bounded by --tp-timeout). */
async function meetUntilDone(rejoin: Meeting): Promise<TpChannel[]> {
  let said = ''
  for (let attempt = 0; ; attempt++) {
    try {
      return await rejoin(attempt === 0)
    } catch (error) {
      // a timeout again and again is said once; a new reason (a rank with another model) is said when it comes
      const message = (error as Error).message.replace(/\d+ of (\d+) peers connected/, 'not every peer connected')
      if (message !== said) consola.warn(`tensor parallel: ${(error as Error).message}; still waiting`)
      said = message
    }
  }
}

/** Rank 0 of a sealed group: a lost rank degrades the cluster (new requests 503, running ones wait out the resume
 * window) and rank 0 waits for the ranks to meet it again — the lost one once restarted with the same --tp-rank, the
 * others (which a failed group drops) at once. Once whole, the requests re-prefill and go on where they stopped. */
export function keepTensorParallelWhole(
  group: SealedTpGroup,
  pipeline: TensorParallelPipeline,
  rejoin: Meeting,
  scheduler: Scheduler,
): void {
  let stopWatch = group.watch(1000)
  let rejoining = false
  const meetAgain = async () => {
    if (rejoining) return
    rejoining = true
    try {
      for (;;) {
        group.restore(await meetUntilDone(rejoin))
        try {
          pipeline.resync()
        } catch {
          continue // lost again at once: meet again
        }
        stopWatch = group.watch(1000)
        scheduler.setDegraded(null)
        consola.success('tensor parallel: every rank is back; the requests that waited resume')
        return
      }
    } finally {
      rejoining = false
    }
  }
  group.onFailure((error) => {
    stopWatch()
    scheduler.setDegraded(
      `tensor-parallel rank lost (${error.message}): restart it with the same --tp-rank and it rejoins`,
    )
    void meetAgain()
  })
}

/** Ranks > 0: follows rank 0 until it stops cleanly (returns the steps replayed); when it goes away instead, keeps the
 * model loaded, frees every slot and meets it again at `peer` (the count is of the last meeting's steps). Errors that
 * are not a lost group end here. */
export async function followRankZero(
  stage: ModelStage,
  group: SealedTpGroup,
  rejoin: Meeting,
  peer: string,
): Promise<number> {
  for (;;) {
    // written synchronously: from here on this thread blocks in the group's receive
    writeSync(1, `tensor-parallel rank ${group.rank} ready: following rank 0\n`)
    try {
      return followTensorParallel(stage, group)
    } catch (error) {
      if (!group.failure) throw error
      consola.warn(
        `tensor-parallel rank ${group.rank}: ${(error as Error).message}; waiting to meet rank 0 again at ${peer} (the model stays loaded)`,
      )
      stage.cache.releaseAll()
      group.restore(await meetUntilDone(rejoin))
    }
  }
}
