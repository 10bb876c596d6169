/** `bench serve --shared-prefix N`: the multi-turn TTFT benchmark (bench/shared-prefix.ts) against --url as it runs, or
 * against servers this command starts from --model twice — with the prefix cache (serve's default) and without
 * (--prefix-cache 0) — so the two columns come from the same machine in the same run. */
import { consola } from 'consola'
import { measureSharedPrefix, type TurnResult } from '../bench/shared-prefix.ts'
import { servedModel } from '../bench/serve-sweep.ts'
import { startServeTarget, type TargetOptions } from '../bench/serve-target.ts'
import { benchTargetArgs } from '../bench/sweep.ts'

export interface SharedPrefixRun {
  url?: string
  target?: Omit<TargetOptions, 'maxBatch' | 'extraArgs'> & { extraArgs: string[] }
  prefixTokens: number
  turns: number
  turnTokens: number
  maxTokens: number
  conversations: number
  apiKey?: string
  signal: AbortSignal
  json: boolean
}

const table = (rows: { label: string; turns: TurnResult[] }[]): string[] => [
  `| turn | prompt tokens | ${rows.map((r) => `${r.label}: TTFT ms (× turn 1), cached`).join(' | ')} |`,
  `| --- | --- | ${rows.map(() => '---').join(' | ')} |`,
  ...rows[0]!.turns.map(
    (t, i) =>
      `| ${t.turn} | ${t.prompt_tokens} | ${rows
        .map((r) => `${r.turns[i]!.ttft_ms} (×${r.turns[i]!.ttft_ratio}), ${r.turns[i]!.cached_tokens ?? '–'}`)
        .join(' | ')} |`,
  ),
]

export async function runSharedPrefix(o: SharedPrefixRun): Promise<void> {
  const measure = async (url: string) => {
    const model = await servedModel(url, o.apiKey)
    return measureSharedPrefix({ ...o, url, model })
  }
  const rows: { label: string; turns: TurnResult[] }[] = []
  if (o.url) rows.push({ label: 'as it runs', turns: await measure(o.url) })
  else {
    const longest = o.prefixTokens + (o.turns - 1) * o.turnTokens
    for (const [label, cache] of [
      ['cache', 'auto'],
      ['no cache', '0'],
    ] as const) {
      if (o.signal.aborted) break
      if (!o.json) consola.start(`starting a server for ${o.target!.model}, --prefix-cache ${cache}`)
      const base = benchTargetArgs(1, longest, o.maxTokens)
      const target = await startServeTarget({
        ...o.target!,
        ...base,
        extraArgs: [...base.extraArgs, ...o.target!.extraArgs, '--prefix-cache', cache],
      })
      try {
        rows.push({ label, turns: await measure(target.url) })
      } finally {
        await target.stop()
      }
    }
  }
  const out = {
    prefix_tokens: o.prefixTokens,
    turns: o.turns,
    turn_tokens: o.turnTokens,
    conversations: o.conversations,
    runs: rows,
  }
  if (o.json) console.log(JSON.stringify(out))
  else for (const line of table(rows)) console.log(line)
}
