/** Small synthetic models for tests, written once per test process into a temp folder and reused. */
import { cpSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { removeAfterRun } from './cleanup.ts'
import { synthesizeModel, type SynthArch, type SynthDtype, type SynthSpec } from '../../src/model/synth.ts'

// a full run writes a few GB of models: they go when the run ends
const root = removeAfterRun(mkdtempSync(join(tmpdir(), 'dbc-models-')))
const made = new Map<string, Promise<string>>()

/** 3 layers, hidden 64, GQA 4:2, head_dim 16; the real Qwen3 vocabulary (151,936), so the real tokenizer drives it. */
export const TINY = { layers: 3, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, intermediate: 128 }

export function synthModel(arch: SynthArch, dtype: SynthDtype, extra: Partial<SynthSpec> = {}): Promise<string> {
  const spec: SynthSpec = { arch, dtype, ...TINY, groupSize: 32, seed: 7, ...extra }
  const key = JSON.stringify(spec)
  let dir = made.get(key)
  if (!dir) {
    const path = join(root, `${arch}-${dtype}-${made.size}`)
    dir = synthesizeModel(path, spec).then(() => path)
    made.set(key, dir)
  }
  return dir
}

/** A private copy of a model folder, for tests that edit or damage it. */
export function copyOfModel(dir: string): string {
  const copy = mkdtempSync(join(root, 'copy-'))
  // the model's files only: a manifest sidecar another test's head recorded there does not belong to a fresh copy
  cpSync(dir, copy, { recursive: true, filter: (src) => !basename(src).startsWith('.dbcluster-manifest') })
  return copy
}
