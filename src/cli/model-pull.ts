/** `dbcluster model pull`: download a model from the Hugging Face hub (or HF_ENDPOINT) into the hub cache or --dir. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { formatBytes } from '../distribution/disk-space.ts'
import { hubCacheDir, hubFromEnv, pullModel, type PullProgress } from '../distribution/hub-pull.ts'

const duration = (s: number | null) =>
  s === null || !Number.isFinite(s)
    ? '--'
    : s >= 3600
      ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
      : s >= 60
        ? `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`
        : `${Math.ceil(s)}s`

export const progressLine = (p: PullProgress) =>
  `${formatBytes(p.bytes)} / ${formatBytes(p.total)} (${p.total ? Math.floor((100 * p.bytes) / p.total) : 100}%)  ${formatBytes(p.rate)}/s  ETA ${duration(p.etaSeconds)}  ${p.file}`

/** On a terminal one line redrawn in place (10 per second at most); elsewhere (logs, pipes) a plain line every few seconds. */
export function progressPrinter(tty: boolean, intervalMs: number) {
  let last = 0
  let drawn = false
  return {
    update(p: PullProgress) {
      const now = performance.now()
      if (now - last < (tty ? 100 : intervalMs)) return
      last = now
      if (tty) (process.stderr.write(`\r\x1b[2K${progressLine(p)}`), (drawn = true))
      else consola.info(progressLine(p))
    },
    clear() {
      if (drawn) process.stderr.write('\r\x1b[2K')
      drawn = false
    },
  }
}

export default defineCommand({
  meta: {
    name: 'pull',
    description:
      "Download a model from the Hugging Face hub (HF_ENDPOINT overrides the hub URL, HF_TOKEN is sent as a bearer token); resumable, every file checked against the hub's hash",
  },
  args: {
    repo: { type: 'positional', description: 'Hub repository, e.g. mlx-community/Qwen3-0.6B-4bit', required: true },
    revision: { type: 'string', description: 'Branch, tag or commit', default: 'main' },
    dir: {
      type: 'string',
      description:
        'Put the files in this folder instead of the hub cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub)',
      valueHint: 'DIR',
    },
  },
  async run({ args }) {
    const hub = hubFromEnv()
    consola.start(`pulling ${args.repo}@${args.revision} from ${hub.endpoint} into ${args.dir ?? hubCacheDir()}`)
    const printer = progressPrinter(Boolean(process.stderr.isTTY), 2000)
    let lastProgress: PullProgress | null = null
    const result = await pullModel({
      repo: args.repo,
      revision: args.revision,
      dir: args.dir,
      hub,
      onProgress: (p) => {
        lastProgress = p
        printer.update(p)
      },
      onEvent: (e) => {
        printer.clear()
        if (e.type === 'present') consola.info(`${e.file}: already here`)
        else if (e.type === 'downloaded')
          consola.success(
            `${e.file}: ${formatBytes(e.bytes)}${e.resumedFrom ? ` (resumed at ${formatBytes(e.resumedFrom)})` : ''}, hash verified`,
          )
        else consola.warn(`${e.file}: ${e.reason}; trying again`)
      },
    })
    printer.clear()
    if (lastProgress) consola.info(progressLine(lastProgress))
    consola.success(
      `${args.repo}@${result.commit.slice(0, 12)}: ${result.files.length} files, ${formatBytes(result.downloadedBytes)} downloaded, in ${result.dir}`,
    )
  },
})
