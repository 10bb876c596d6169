/** `model list`: the models on this machine (the hub cache's snapshots and any folders named), with size, architecture,
 * quantization, and whether they are complete: every file the index names present at the right size, nothing half
 * downloaded, and (with verify) every file matching its manifest hash. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import { readSafetensorsHeader } from '../model/safetensors.ts'
import { sha256File } from './file-hash.ts'
import { isWeightFile, listModelFiles, readManifestSidecar } from './manifest.ts'

export interface LocalModel {
  /** ORG/NAME for hub-cache models, the folder's name otherwise. */
  name: string
  path: string
  /** Branch or tag pointing at the snapshot (or its commit), for hub-cache models. */
  revision: string | null
  bytes: number
  architecture: string | null
  /** e.g. "4-bit g64", "4-bit g64 mixed", "bf16". */
  quantization: string | null
  complete: boolean
  /** What is missing or wrong, when not complete. */
  problems: string[]
  /** With verify: true when every file matched its manifest hash, false when one did not, null without a manifest. */
  verified?: boolean | null
}

export interface ListOptions {
  cacheDir?: string
  dirs?: string[]
  verify?: boolean
}

function readJsonOrNull(path: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return null
  }
}

function describeQuantization(config: Record<string, unknown>): string | null {
  const q = (config.quantization ?? config.quantization_config) as Record<string, unknown> | undefined
  if (q && typeof q === 'object' && q.bits !== undefined) {
    const mixed = Object.values(q).some((v) => v === false || (v !== null && typeof v === 'object'))
    return `${q.bits}-bit g${q.group_size ?? 64}${mixed ? ' mixed' : ''}`
  }
  const dtype = String(config.torch_dtype ?? config.dtype ?? '')
  return ({ float32: 'f32', float16: 'f16', bfloat16: 'bf16' } as Record<string, string>)[dtype] ?? (dtype || null)
}

/** Completeness without hashing: config, weights named by the index present, each safetensors file exactly as long as
 * its header says, the sizes the manifest recorded, no `.part` left over. */
function problemsOf(dir: string): string[] {
  const problems: string[] = []
  if (!existsSync(join(dir, 'config.json'))) problems.push('config.json missing')
  else if (!readJsonOrNull(join(dir, 'config.json'))) problems.push('config.json is not JSON')
  const present = new Set(listModelFiles(dir))
  const parts = readdirSync(dir).filter((f) => f.endsWith('.part'))
  if (parts.length) problems.push(`unfinished download: ${parts.join(', ')}`)
  let weights = [...present].filter(isWeightFile)
  const index = existsSync(join(dir, 'model.safetensors.index.json'))
    ? readJsonOrNull(join(dir, 'model.safetensors.index.json'))
    : null
  if (index) {
    weights = [...new Set(Object.values((index.weight_map ?? {}) as Record<string, string>))].sort()
    for (const w of weights) if (!present.has(w)) problems.push(`${w} missing`)
  }
  if (weights.length === 0) problems.push('no safetensors weights')
  for (const w of weights.filter((w) => present.has(w))) {
    try {
      const { entries } = readSafetensorsHeader(join(dir, w))
      const end = entries.reduce((a, e) => Math.max(a, e.end), 0)
      const size = statSync(join(dir, w)).size
      if (entries.length && size !== end) problems.push(`${w} is ${size} bytes, its header says ${end}`)
    } catch (error) {
      problems.push(`${w}: ${(error as Error).message}`)
    }
  }
  if (!present.has('tokenizer.json') && !present.has('tokenizer.model'))
    problems.push('no tokenizer (tokenizer.json or tokenizer.model)')
  const manifest = readManifestSidecar(dir)
  for (const f of manifest?.files ?? []) {
    if (!present.has(f.name)) problems.push(`${f.name} missing`)
    else if (statSync(join(dir, f.name)).size !== f.size)
      problems.push(`${f.name} is ${statSync(join(dir, f.name)).size} bytes, the manifest says ${f.size}`)
  }
  return [...new Set(problems)]
}

export function describeModel(dir: string, name: string, revision: string | null, verify = false): LocalModel {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    return {
      name,
      path: dir,
      revision,
      bytes: 0,
      architecture: null,
      quantization: null,
      complete: false,
      problems: ['folder not found'],
    }
  }
  const config = readJsonOrNull(join(dir, 'config.json')) ?? {}
  const files = listModelFiles(dir)
  const problems = problemsOf(dir)
  const model: LocalModel = {
    name,
    path: dir,
    revision,
    bytes: files.reduce((a, f) => a + statSync(join(dir, f)).size, 0),
    architecture: typeof config.model_type === 'string' ? config.model_type : null,
    quantization: describeQuantization(config),
    complete: problems.length === 0,
    problems,
  }
  if (verify) {
    const manifest = readManifestSidecar(dir)
    model.verified = null
    if (manifest) {
      const bad = manifest.files
        .filter((f) => files.includes(f.name) && sha256File(join(dir, f.name)) !== f.sha256)
        .map((f) => f.name)
      for (const f of bad) problems.push(`${f} does not match its manifest hash`)
      model.verified = bad.length === 0
      model.complete = problems.length === 0
    }
  }
  return model
}

/** Every snapshot in the hub cache (models--ORG--NAME/snapshots/COMMIT), then each folder given. */
export function listLocalModels(options: ListOptions): LocalModel[] {
  const found: LocalModel[] = []
  const cache = options.cacheDir
  if (cache && existsSync(cache)) {
    for (const repoFolder of readdirSync(cache)
      .filter((f) => f.startsWith('models--'))
      .sort()) {
      const repoDir = join(cache, repoFolder)
      const name = repoFolder.slice('models--'.length).split('--').join('/')
      const refs = new Map<string, string>()
      if (existsSync(join(repoDir, 'refs'))) {
        for (const ref of readdirSync(join(repoDir, 'refs'))) {
          if (statSync(join(repoDir, 'refs', ref)).isFile())
            refs.set(readFileSync(join(repoDir, 'refs', ref), 'utf8').trim(), ref)
        }
      }
      const snapshots = existsSync(join(repoDir, 'snapshots')) ? readdirSync(join(repoDir, 'snapshots')).sort() : []
      // a pull into the cache downloads into blobs/ and links the snapshot at the end
      const parts = existsSync(join(repoDir, 'blobs'))
        ? readdirSync(join(repoDir, 'blobs')).filter((b) => b.endsWith('.part'))
        : []
      for (const commit of snapshots) {
        const model = describeModel(
          join(repoDir, 'snapshots', commit),
          name,
          refs.get(commit) ?? commit.slice(0, 12),
          options.verify,
        )
        if (parts.length)
          (model.problems.push(`unfinished download in ${join(repoDir, 'blobs')}`), (model.complete = false))
        found.push(model)
      }
    }
  }
  for (const dir of options.dirs ?? [])
    found.push(describeModel(dir, basename(dir.replace(/\/+$/, '')) || dir, null, options.verify))
  return found
}
