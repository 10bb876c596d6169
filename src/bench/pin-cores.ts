/** Core pinning for serving benchmarks on Linux: each process of a target gets its own cores, so "a 2-node cluster,
 * one core each" against "one process on one core" compares equal hardware even on a busy machine. */
import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism, platform } from 'node:os'

/** Why pinning `processes × coresEach` cores cannot be done here, or null when it can. */
export function pinningUnavailable(processes: number, coresEach: number): string | null {
  if (platform() !== 'linux')
    return `core pinning needs Linux (taskset); on ${platform()} the processes share all cores`
  if (!Bun.which('taskset'))
    return 'taskset is not installed (Debian: apt-get install util-linux); the processes share all cores'
  const cores = availableParallelism()
  if (processes * coresEach > cores)
    return `${processes} process(es) × ${coresEach} core(s) need ${processes * coresEach} cores, this machine has ${cores}; the processes share them`
  return null
}

/** Cores for process `index` when every process gets `coresEach` of its own: [index·n, (index+1)·n). */
export const coresFor = (index: number, coresEach: number): number[] =>
  Array.from({ length: coresEach }, (_, i) => index * coresEach + i)

/** Pins every thread of `pid` (and the threads it starts later, which inherit the mask) to `cores`. */
export async function pinToCores(pid: number, cores: number[]): Promise<void> {
  const proc = Bun.spawn(['taskset', '--all-tasks', '--cpu-list', '--pid', cores.join(','), String(pid)], {
    stdout: 'ignore',
    stderr: 'pipe',
  })
  if ((await proc.exited) !== 0)
    throw new Error(
      `taskset could not pin process ${pid} to cores ${cores.join(',')}: ${(await new Response(proc.stderr).text()).trim()}`,
    )
}

/** Process ids whose command line has every `--flag value` pair of `options` (read from /proc). */
export function processesWithOptions(options: Record<string, string>): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let args: string[]
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
    } catch {
      continue // the process ended while we looked
    }
    const has = (flag: string, value: string) => args.some((a, i) => a === flag && args[i + 1] === value)
    if (Object.entries(options).every(([flag, value]) => has(flag, value))) found.push(Number(entry))
  }
  return found
}
