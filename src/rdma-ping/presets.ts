/** rdma-ping's presets, after the seed's `make rdma-quick|rdma-verbose|rdma-stress` (mlx-jaccl-cluster Makefile and
 * scripts/rdma_test.py), and how a preset, explicit flags and the defaults combine into one plan. */
import { UsageError } from '../errors.ts'
import { parseSizes } from './ping-rounds.ts'

export interface PingPreset {
  rounds: number
  sizes: string
  /** Print every measured round's time (on stderr). */
  perRound: boolean
}

/** Without a preset: the seed's `make rdma-test` (20 rounds; 1024,65536,1048576,16777216 float32 elements). */
export const DEFAULT_PLAN: PingPreset = { rounds: 20, sizes: '4K,256K,4M,64M', perRound: false }

export const PRESETS = {
  // rdma-quick: RDMA_ROUNDS=5 RDMA_SIZES=1024,65536 (elements) — a smoke test; it cannot judge the link (no 64 MiB).
  quick: { rounds: 5, sizes: '4K,256K', perRound: false },
  // rdma-verbose: rdma-test's 20 rounds and 4 sizes with RDMA_VERBOSE=1 (per-round timing).
  verbose: { rounds: 20, sizes: '4K,256K,4M,64M', perRound: true },
  // rdma-stress: STRESS_ROUNDS=100, STRESS_SIZES=1048576,16777216,67108864,134217728 elements (4M..512M bytes) with
  // RDMA_VERBOSE=1. Its own cap (3 × size ≤ RDMA_MAX_MB=512) skips 256M and 512M there; we keep 256M, the largest
  // vector the sealed link carries in one frame (256 MiB), and drop 512M.
  stress: { rounds: 100, sizes: '4M,64M,256M', perRound: true },
} as const satisfies Record<string, PingPreset>

export type PresetName = keyof typeof PRESETS

export interface PingPlan {
  preset: PresetName | null
  rounds: number
  sizes: number[]
  perRound: boolean
}

/** A preset's values, overridden by whatever was given explicitly; an unknown preset is refused by name. */
export function resolvePingPlan(given: {
  preset?: string
  rounds?: number
  sizes?: string
  perRound?: boolean
}): PingPlan {
  let base: PingPreset = DEFAULT_PLAN
  let preset: PresetName | null = null
  if (given.preset !== undefined) {
    if (!Object.hasOwn(PRESETS, given.preset))
      throw new UsageError(
        `unknown --preset '${given.preset}'`,
        `use ${Object.keys(PRESETS).join(', ')} (or leave it out: --rounds ${DEFAULT_PLAN.rounds} --sizes ${DEFAULT_PLAN.sizes})`,
      )
    preset = given.preset as PresetName
    base = PRESETS[preset]
  }
  return {
    preset,
    rounds: given.rounds ?? base.rounds,
    sizes: parseSizes(given.sizes ?? base.sizes),
    perRound: given.perRound ?? base.perRound,
  }
}
