/** --model as given: a folder, or a hub repository ORG/NAME[@REVISION] resolved to its cached snapshot (pulled first
 * when missing, with progress); and the name stages store received files under. */
import { existsSync } from 'node:fs'
import { basename, resolve } from 'node:path'
import { hubFromEnv } from '../distribution/hub-pull.ts'
import { resolveModelDir, type ResolveOptions } from '../distribution/model-source.ts'

export async function modelFolder(spec: string, onProgress?: ResolveOptions['onProgress']): Promise<string> {
  if (existsSync(spec)) return spec
  return resolveModelDir(spec, { hub: hubFromEnv(), onProgress })
}

/** The folder's name, or ORG--NAME for a hub repository. */
export function modelName(spec: string): string {
  return existsSync(spec) ? basename(resolve(spec)) : spec.split('@')[0]!.replace('/', '--')
}
