/** The default demo model: a small synthetic Qwen3 written on first use, so `dbcluster serve` works on a fresh machine. */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { stateDir } from '../state-dir.ts'
import { synthesizeModel } from './synth.ts'

export const DEMO_SPEC = {
  arch: 'qwen3',
  layers: 4,
  hidden: 256,
  heads: 4,
  kvHeads: 2,
  headDim: 64,
  intermediate: 768,
  dtype: 'q4',
  groupSize: 64,
  seed: 1,
} as const

/** Path of the demo model; `created` is true when this call wrote it. */
export async function ensureDemoModel(
  onProgress: (line: string) => void = () => {},
): Promise<{ dir: string; created: boolean }> {
  const dir = join(stateDir(), 'models', 'demo-qwen3-synthetic')
  if (existsSync(join(dir, 'config.json'))) return { dir, created: false }
  await synthesizeModel(dir, { ...DEMO_SPEC }, onProgress)
  return { dir, created: true }
}
