/** The model manifest: every file's size and SHA-256, and which tensors (so which layers) each safetensors file holds;
 * signed by the head's identity as canonical JSON, so a stage can check every byte it receives against the head's word. */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { readJson } from '../model/checkpoint.ts'
import { readSafetensorsHeader } from '../model/safetensors.ts'
import { readModelConfig } from '../model/shard.ts'
import { canonicalJson } from '../trust/canonical-json.ts'
import { compressPublicKey, fingerprint, verifySignature, type Identity } from '../trust/identity.ts'
import { DistributionError } from './errors.ts'
import { isSha256Hex, sha256File } from './file-hash.ts'

export const MANIFEST_VERSION = 1
/** Where a folder keeps its own manifest (with the stat data that lets it be reused without hashing again). */
export const MANIFEST_SIDECAR = '.dbcluster-manifest.json'

export interface ManifestFile {
  /** Path inside the model folder, '/'-separated. */
  name: string
  size: number
  /** Lowercase hex. */
  sha256: string
  /** For safetensors files: the tensors it holds (sorted) and the decoder layers they belong to. */
  tensors?: string[]
  layers?: number[]
}

export interface Manifest {
  version: number
  numLayers: number
  /** The last stage needs the embedding too when lm_head is tied to it. */
  tieWordEmbeddings: boolean
  files: ManifestFile[]
}

export interface SignedManifest {
  manifest: Manifest
  /** Base64 of the signer's 33-byte compressed P-256 key. */
  publicKey: string
  /** Base64 of the 64-byte ECDSA-P256-SHA256 signature over canonicalJson(manifest). */
  signature: string
}

/** A pipeline stage's share of the model: layers [lo, hi); the first embeds, the last holds the final norm and lm_head. */
export interface StageRange {
  lo: number
  hi: number
  first: boolean
  last: boolean
}

const LAYER = /(?:^|\.)layers\.(\d+)\./
const EMBEDDING = /(?:^|\.)embed_tokens\./
const HEAD = /(?:^|\.)norm\.|^(?:.*\.)?lm_head\./
/** Files every stage needs besides weights: config, generation config, tokenizer, chat template, the index. */
const SHARED_FILE = /\.(json|jinja|txt|model|tiktoken)$/

export const isWeightFile = (name: string) => name.endsWith('.safetensors')
const isSkipped = (name: string) => name.split('/').some((part) => part.startsWith('.')) || name.endsWith('.part')

/** Every file under dir (relative, '/'-separated), leaving out dotfiles (the sidecar, caches) and unfinished `.part`s. */
export function listModelFiles(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => {
      const name = prefix ? `${prefix}/${e.name}` : e.name
      if (isSkipped(name)) return []
      // statSync follows links: the hub cache's snapshot files are symlinks into blobs/
      const stat = statSync(join(dir, name))
      return stat.isDirectory() ? listModelFiles(dir, name) : stat.isFile() ? [name] : []
    })
    .sort()
}

/** Tensor names per safetensors file: from the index when there is one, else each file's header. */
function tensorsByFile(dir: string, weightFiles: string[]): Map<string, string[]> {
  const byFile = new Map<string, string[]>(weightFiles.map((f) => [f, []]))
  const indexFile = join(dir, 'model.safetensors.index.json')
  if (existsSync(indexFile)) {
    const map = readJson(indexFile, 'model.safetensors.index.json').weight_map
    if (!map || typeof map !== 'object')
      throw new DistributionError('E_MANIFEST_INDEX', `${indexFile} has no weight_map`, 'download the model again')
    for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
      const list = byFile.get(String(file))
      if (!list)
        throw new DistributionError(
          'E_MANIFEST_INDEX',
          `the index puts ${tensor} in ${String(file)}, which is not in ${dir}`,
          'the download is incomplete: pull the model again',
        )
      list.push(tensor)
    }
  } else {
    for (const f of weightFiles) byFile.get(f)!.push(...readSafetensorsHeader(join(dir, f)).entries.map((e) => e.name))
  }
  for (const list of byFile.values()) list.sort()
  return byFile
}

const layersOf = (tensors: string[]) =>
  [...new Set(tensors.flatMap((t) => (LAYER.test(t) ? [Number(LAYER.exec(t)![1])] : [])))].sort((a, b) => a - b)

/** numLayers and tied embeddings as the model's architecture reads them; the raw config for an unknown architecture. */
function modelShape(dir: string, tensors: string[]): { numLayers: number; tieWordEmbeddings: boolean } {
  try {
    const config = readModelConfig(dir)
    return { numLayers: config.numLayers, tieWordEmbeddings: config.tieWordEmbeddings }
  } catch {
    const raw = readJson(join(dir, 'config.json'), 'config.json')
    const numLayers = Number(raw.num_hidden_layers ?? (layersOf(tensors).at(-1) ?? -1) + 1)
    return { numLayers, tieWordEmbeddings: !tensors.some((t) => /(?:^|\.)lm_head\./.test(t)) }
  }
}

/** Hashes every file of a model folder and records which tensors each weight file holds. `known` holds SHA-256s already
 * verified elsewhere (the hub's LFS oids after a pull), so those files are not read again. */
export function buildManifest(
  dir: string,
  onProgress: (file: string, bytes: number) => void = () => {},
  known: ReadonlyMap<string, string> = new Map(),
): Manifest {
  if (!existsSync(join(dir, 'config.json')))
    throw new DistributionError(
      'E_MANIFEST_DIR',
      `${dir} has no config.json`,
      'point at a model folder in the MLX-community layout',
    )
  const names = listModelFiles(dir)
  const weights = tensorsByFile(dir, names.filter(isWeightFile))
  const files: ManifestFile[] = names.map((name) => {
    const sha256 = known.get(name) ?? sha256File(join(dir, name), (n) => onProgress(name, n))
    const entry: ManifestFile = { name, size: statSync(join(dir, name)).size, sha256 }
    const tensors = weights.get(name)
    if (tensors) Object.assign(entry, { tensors, layers: layersOf(tensors) })
    return entry
  })
  return { version: MANIFEST_VERSION, ...modelShape(dir, [...weights.values()].flat()), files }
}

interface Sidecar {
  manifest: Manifest
  stat: Record<string, { size: number; mtimeMs: number }>
}

/** The folder's manifest, reusing the sidecar when no file changed size or time since it was written (hashing hundreds
 * of gigabytes on every start would be slow); otherwise built and the sidecar rewritten. */
export function manifestFor(dir: string, onProgress?: (file: string, bytes: number) => void): Manifest {
  const sidecarPath = join(dir, MANIFEST_SIDECAR)
  const statOf = (names: string[]) =>
    Object.fromEntries(names.map((n) => [n, (({ size, mtimeMs }) => ({ size, mtimeMs }))(statSync(join(dir, n)))]))
  const names = existsSync(dir) ? listModelFiles(dir) : []
  if (existsSync(sidecarPath)) {
    try {
      const sidecar = JSON.parse(readFileSync(sidecarPath, 'utf8')) as Sidecar
      if (canonicalJson(sidecar.stat) === canonicalJson(statOf(names)) && sidecar.manifest.version === MANIFEST_VERSION)
        return parseManifest(sidecar.manifest)
    } catch {
      // unreadable sidecar: build afresh below
    }
  }
  const manifest = buildManifest(dir, onProgress)
  try {
    writeManifestSidecar(dir, manifest)
  } catch {
    // a read-only model folder: the manifest is still right, it is only built again next time
  }
  return manifest
}

/** Records a manifest next to the files it describes (pull does this with the hashes it already verified). */
export function writeManifestSidecar(dir: string, manifest: Manifest): void {
  const stat = Object.fromEntries(
    manifest.files.map((f) => [f.name, (({ size, mtimeMs }) => ({ size, mtimeMs }))(statSync(join(dir, f.name)))]),
  )
  writeFileSync(join(dir, MANIFEST_SIDECAR), JSON.stringify({ manifest, stat } satisfies Sidecar))
}

/** The sidecar's manifest without touching the files, or null when the folder has none. */
export function readManifestSidecar(dir: string): Manifest | null {
  const path = join(dir, MANIFEST_SIDECAR)
  if (!existsSync(path)) return null
  try {
    return parseManifest((JSON.parse(readFileSync(path, 'utf8')) as Sidecar).manifest)
  } catch {
    return null
  }
}

const base64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const fromBase64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'))

export async function signManifest(manifest: Manifest, identity: Identity): Promise<SignedManifest> {
  const signature = await identity.sign(new TextEncoder().encode(canonicalJson(manifest)))
  return { manifest, publicKey: base64(identity.publicKey), signature: base64(signature) }
}

/** The bytes that travel: canonical JSON of the signed manifest. */
export const encodeSignedManifest = (signed: SignedManifest): Uint8Array =>
  new TextEncoder().encode(canonicalJson(signed))

/** Checks that the manifest was signed by `trustedKey` (the head's pinned key) and is well formed; throws otherwise. */
export function verifySignedManifest(bytes: Uint8Array, trustedKey: Uint8Array): Manifest {
  let signed: SignedManifest
  try {
    signed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    throw new DistributionError(
      'E_MANIFEST_SIGNATURE',
      'the manifest from the head is not JSON',
      'the head runs another release or the link is broken',
    )
  }
  const trusted = compressPublicKey(trustedKey)
  let signer: Uint8Array
  try {
    signer = compressPublicKey(fromBase64(String(signed?.publicKey)))
  } catch {
    throw new DistributionError('E_MANIFEST_SIGNATURE', 'the manifest names no valid signing key')
  }
  if (base64(signer) !== base64(trusted)) {
    throw new DistributionError(
      'E_MANIFEST_SIGNATURE',
      `the manifest is signed by ${fingerprint(signer)}, not by the head's pinned key ${fingerprint(trusted)}`,
      'check which key is pinned for the head',
    )
  }
  if (
    !signed.manifest ||
    !verifySignature(
      trusted,
      new TextEncoder().encode(canonicalJson(signed.manifest)),
      fromBase64(String(signed.signature)),
    )
  ) {
    throw new DistributionError(
      'E_MANIFEST_SIGNATURE',
      `the manifest's signature does not verify against the head's key ${fingerprint(trusted)}`,
      'the manifest was altered; nothing was written',
    )
  }
  return parseManifest(signed.manifest)
}

/** Shape checks on a manifest (even a signed one: a name must never leave the model folder). */
export function parseManifest(raw: unknown): Manifest {
  const bad = (why: string): never => {
    throw new DistributionError(
      'E_MANIFEST_SHAPE',
      `malformed manifest: ${why}`,
      "rebuild it (delete the folder's .dbcluster-manifest.json) or update both nodes",
    )
  }
  const m = raw as Manifest
  if (!m || typeof m !== 'object' || m.version !== MANIFEST_VERSION)
    bad(`version ${(m as Manifest | null)?.version} is not ${MANIFEST_VERSION}`)
  if (!Number.isInteger(m.numLayers) || m.numLayers < 1) bad('numLayers must be a positive integer')
  if (typeof m.tieWordEmbeddings !== 'boolean') bad('tieWordEmbeddings must be a boolean')
  if (!Array.isArray(m.files)) bad('files must be a list')
  const seen = new Set<string>()
  for (const f of m.files) {
    if (typeof f?.name !== 'string' || !isSafeName(f.name))
      bad(`file name ${JSON.stringify(f?.name)} is not a plain relative path`)
    if (seen.has(f.name)) bad(`${f.name} is listed twice`)
    seen.add(f.name)
    if (!Number.isSafeInteger(f.size) || f.size < 0) bad(`${f.name} has size ${f.size}`)
    if (typeof f.sha256 !== 'string' || !isSha256Hex(f.sha256)) bad(`${f.name} has no SHA-256`)
    if (f.tensors !== undefined && !(Array.isArray(f.tensors) && f.tensors.every((t) => typeof t === 'string')))
      bad(`${f.name} has a bad tensor list`)
    if (f.layers !== undefined && !(Array.isArray(f.layers) && f.layers.every((l) => Number.isInteger(l) && l >= 0)))
      bad(`${f.name} has a bad layer list`)
  }
  return m
}

export const isSafeName = (name: string) =>
  name.length > 0 &&
  name.length < 1024 &&
  !name.startsWith('/') &&
  !name.includes('\\') &&
  !name.includes('\0') &&
  name.split('/').every((p) => p !== '' && p !== '.' && p !== '..')

/** The files a stage needs: the weight files holding its layers (plus the embedding on the first stage, or on the last
 * when lm_head is tied; the final norm and lm_head on the last), and every config, tokenizer and chat-template file. */
export function filesForStage(manifest: Manifest, range: StageRange): ManifestFile[] {
  const { lo, hi, first, last } = range
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo < hi && hi <= manifest.numLayers)) {
    throw new DistributionError(
      'E_STAGE_RANGE',
      `layer range [${lo}, ${hi}) is not inside the model's ${manifest.numLayers} layers`,
    )
  }
  const wantsTensor = (t: string): boolean => {
    const layer = LAYER.exec(t)
    if (layer) return Number(layer[1]) >= lo && Number(layer[1]) < hi
    if (EMBEDDING.test(t)) return first || (last && manifest.tieWordEmbeddings)
    if (HEAD.test(t)) return last
    return false // tensors of no decoder role (vision towers, …) stay with the head
  }
  return manifest.files.filter((f) =>
    isWeightFile(f.name) ? (f.tensors ?? []).some(wantsTensor) : SHARED_FILE.test(f.name),
  )
}
