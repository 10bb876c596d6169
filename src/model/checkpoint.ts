/** A model folder in the MLX-community layout: config.json, one or more *.safetensors (with model.safetensors.index.json
 * when sharded), tokenizer files. Only headers are read up front; tensor data is mapped when a stage claims it. */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CheckpointError } from './errors.ts'
import { readSafetensorsHeader, type TensorEntry } from './safetensors.ts'

export interface Checkpoint {
  dir: string
  config: Record<string, unknown>
  /** Every tensor in the checkpoint, by name. */
  tensors: Map<string, TensorEntry>
  /** Files whose headers were read (only those the index points at for the needed tensors, when a filter is given). */
  files: string[]
}

export function readJson(file: string, what: string): Record<string, unknown> {
  if (!existsSync(file))
    throw new CheckpointError(
      'E_CKPT_MISSING',
      `${what} not found: ${file}`,
      'point --model at a folder in the MLX-community layout',
    )
  try {
    return JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new CheckpointError('E_CKPT_JSON', `${file} is not valid JSON: ${(error as Error).message}`)
  }
}

/** Opens a checkpoint folder. `wanted(name)` limits which files are opened when an index says where tensors live. */
export function openCheckpoint(dir: string, wanted: (name: string) => boolean = () => true): Checkpoint {
  const config = readJson(join(dir, 'config.json'), 'config.json')
  const indexFile = join(dir, 'model.safetensors.index.json')
  let files: string[]
  if (existsSync(indexFile)) {
    const index = readJson(indexFile, 'model.safetensors.index.json')
    const map = index.weight_map as Record<string, string> | undefined
    if (!map || typeof map !== 'object') throw new CheckpointError('E_CKPT_INDEX', `${indexFile} has no weight_map`)
    files = [
      ...new Set(
        Object.entries(map)
          .filter(([name]) => wanted(name))
          .map(([, f]) => f),
      ),
    ].sort()
  } else {
    files = existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.endsWith('.safetensors'))
          .sort()
      : []
    if (files.length === 0)
      throw new CheckpointError(
        'E_CKPT_MISSING',
        `no *.safetensors in ${dir}`,
        'the folder holds no weights; download the model again',
      )
  }
  const tensors = new Map<string, TensorEntry>()
  for (const f of files) {
    const path = join(dir, f)
    if (!existsSync(path))
      throw new CheckpointError(
        'E_CKPT_MISSING',
        `${path} is listed in the index but missing`,
        'download the model again',
      )
    for (const entry of readSafetensorsHeader(path).entries) {
      if (tensors.has(entry.name))
        throw new CheckpointError('E_CKPT_DUPLICATE', `tensor ${entry.name} appears in two files`)
      tensors.set(entry.name, entry)
    }
  }
  return { dir, config, tensors, files: files.map((f) => join(dir, f)) }
}
