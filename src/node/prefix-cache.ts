/** The prefix cache a node keeps beside its stage on the compute thread (--prefix-cache): its size, its namespace (the
 * serving fingerprint of the model folder, so a hit never crosses models), and why a model gets none. */
import { consola } from 'consola'
import type { StageThread, ThreadPrefix } from '../compute/stage-thread.ts'
import type { ServingMetrics } from '../engine/metrics.ts'
import { servingFingerprint } from '../model/serving-fingerprint.ts'

/** Of the memory a node offers, the share the cache takes by default of what weights and KV slots leave. */
export const PREFIX_CACHE_SHARE = 0.5

export async function openPrefixCache(
  stage: StageThread,
  o: { prefixCache?: number | 'auto'; usableBytes: number; metrics: ServingMetrics },
  dir: string,
): Promise<ThreadPrefix | undefined> {
  if (!o.prefixCache) return undefined
  if (stage.blockReuseRefusal) {
    consola.info(`prefix cache off: ${stage.blockReuseRefusal} (every prompt is prefilled whole)`)
    return undefined
  }
  const used = stage.weightBytes + stage.cache.bytes
  const capacityBytes =
    o.prefixCache === 'auto' ? Math.floor(Math.max(0, o.usableBytes - used) * PREFIX_CACHE_SHARE) : o.prefixCache
  if (capacityBytes <= 0) return undefined
  const model = Buffer.from(servingFingerprint(dir, {})).toString('hex')
  consola.info(`prefix cache: up to ${(capacityBytes / 2 ** 30).toFixed(2)} GiB of 64-token KV blocks`)
  return stage.openPrefix(capacityBytes, model, o.metrics)
}
