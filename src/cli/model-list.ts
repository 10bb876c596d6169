/** `dbcluster model list`: local models (hub cache and folders given) with size, architecture, quantization, completeness. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { formatBytes } from '../distribution/disk-space.ts'
import { hubCacheDir } from '../distribution/hub-pull.ts'
import { listLocalModels } from '../distribution/local-models.ts'

export default defineCommand({
  meta: {
    name: 'list',
    description:
      'List local models (the Hugging Face hub cache and --dir folders): size, architecture, quantization, complete or not',
  },
  args: {
    dir: {
      type: 'string',
      description: 'Also describe this model folder (comma-separated for several)',
      valueHint: 'DIR[,DIR…]',
    },
    verify: {
      type: 'boolean',
      description: 'Hash every file and compare it with the manifest recorded at pull time (slow for large models)',
      default: false,
    },
    json: {
      type: 'boolean',
      description: 'Print [{name, path, revision, bytes, architecture, quantization, complete, problems, verified?}]',
      default: false,
    },
  },
  async run({ args }) {
    const cacheDir = hubCacheDir()
    const models = listLocalModels({
      cacheDir,
      dirs: args.dir ? args.dir.split(',').filter(Boolean) : [],
      verify: args.verify,
    })
    if (args.json) return console.log(JSON.stringify(models))
    if (models.length === 0)
      return consola.info(
        `no models in ${cacheDir}; fetch one with 'dbcluster model pull ORG/NAME' or name a folder with --dir`,
      )
    const state = (m: (typeof models)[number]) =>
      m.complete
        ? m.verified
          ? 'complete, verified'
          : m.verified === null
            ? 'complete (no manifest to verify against)'
            : 'complete'
        : 'INCOMPLETE'
    console.log(
      '| model | revision | architecture | quantization | size | state |\n| --- | --- | --- | --- | --- | --- |',
    )
    for (const m of models)
      console.log(
        `| ${m.name} | ${m.revision ?? '-'} | ${m.architecture ?? '?'} | ${m.quantization ?? '?'} | ${formatBytes(m.bytes)} | ${state(m)} |`,
      )
    for (const m of models.filter((m) => m.problems.length))
      consola.warn(`${m.name} (${m.path}): ${m.problems.join('; ')}`)
  },
})
