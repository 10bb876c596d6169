/** What `--model` names: a model folder, or a hub repository (ORG/NAME[@REVISION]) found in the hub cache or pulled
 * into it. The integrator's `serve --model REPO_OR_DIR` on the head goes through here. */
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { DistributionError } from './errors.ts'
import { hubCacheDir, pullModel, repoCacheFolder, type PullOptions } from './hub-pull.ts'
import { describeModel } from './local-models.ts'

const REPO_SPEC = /^([A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?$/

/** The snapshot folder of a complete cached model at a revision (a branch or tag via refs/, or a commit), or null. */
export function cachedSnapshot(repo: string, revision: string, cacheDir = hubCacheDir()): string | null {
  const repoDir = join(cacheDir, repoCacheFolder(repo))
  const ref = join(repoDir, 'refs', revision)
  const commit = existsSync(ref) && statSync(ref).isFile() ? readFileSync(ref, 'utf8').trim() : revision
  const dir = join(repoDir, 'snapshots', commit)
  return existsSync(dir) && describeModel(dir, repo, revision).complete ? dir : null
}

export interface ResolveOptions extends Omit<PullOptions, 'repo' | 'revision' | 'dir'> {
  /** Download a repository that is not in the cache (default true). */
  pull?: boolean
}

/** The local folder for `spec`: the folder itself when it exists; else the cached snapshot of ORG/NAME[@REVISION],
 * pulled first when it is missing or incomplete (unless pull is false). */
export async function resolveModelDir(spec: string, options: ResolveOptions = {}): Promise<string> {
  if (existsSync(spec) && statSync(spec).isDirectory()) return spec
  const m = REPO_SPEC.exec(spec)
  if (!m)
    throw new DistributionError(
      'E_MODEL_NOT_FOUND',
      `${spec} is neither a folder nor a hub repository name`,
      'give a model folder or ORG/NAME, e.g. mlx-community/Qwen3-0.6B-4bit',
    )
  const [, repo, revision = 'main'] = m
  const cached = cachedSnapshot(repo!, revision, options.cacheDir)
  if (cached) return cached
  if (options.pull === false)
    throw new DistributionError(
      'E_MODEL_NOT_FOUND',
      `${repo}@${revision} is not in the hub cache ${options.cacheDir ?? hubCacheDir()}`,
      `run 'dbcluster model pull ${repo} --revision ${revision}'`,
    )
  return (await pullModel({ ...options, repo: repo!, revision })).dir
}
