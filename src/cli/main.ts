/** Root command: lazily loads one file per subcommand and maps errors to one clear line and an exit code. */
import { defineCommand, runCommand, renderUsage, type CommandDef } from 'citty'
import { consola } from 'consola'
import { DbcError, ExitCode, InterruptedError, UsageError } from '../errors.ts'
import { VERSION } from '../version.ts'

export const rootCommand = defineCommand({
  meta: {
    name: 'dbcluster',
    version: VERSION,
    description: 'Run one large language model across several machines as one confidential inference provider.',
  },
  args: {
    verbose: { type: 'boolean', description: 'Show debug logs and stack traces on errors', default: false },
  },
  subCommands: {
    serve: () => import('./serve.ts').then((m) => m.default),
    generate: () => import('./generate.ts').then((m) => m.default),
    model: () => import('./model.ts').then((m) => m.default),
    identity: () => import('./identity.ts').then((m) => m.default),
    trust: () => import('./trust.ts').then((m) => m.default),
    cluster: () => import('./cluster.ts').then((m) => m.default),
    bench: () => import('./bench.ts').then((m) => m.default),
    coordinator: () => import('./coordinator.ts').then((m) => m.default),
    doctor: () => import('./doctor.ts').then((m) => m.default),
    'rdma-ping': () => import('./rdma-ping.ts').then((m) => m.default),
  },
})

/** Runs the CLI on argv and returns the exit code (tests call this; src/main.ts exits with it). */
export async function runCli(argv: string[]): Promise<number> {
  const verbose = argv.includes('--verbose')
  if (verbose) consola.level = 4
  if (argv.includes('--version') || argv.includes('-v')) {
    if (argv.filter((a) => !a.startsWith('-')).length === 0) {
      console.log(VERSION)
      return ExitCode.ok
    }
  }
  try {
    const helpAt = argv.findIndex((a) => a === '--help' || a === '-h')
    if (helpAt >= 0 || argv.filter((a) => !a.startsWith('-')).length === 0) {
      const target = await resolveSubCommand(
        rootCommand as unknown as CommandDef,
        argv.filter((a) => !a.startsWith('-')),
      )
      console.log(await renderUsage(target.command, target.parent))
      return helpAt >= 0 || argv.length === 0 ? ExitCode.ok : ExitCode.usage
    }
    await runCommand(rootCommand, { rawArgs: argv })
    return ExitCode.ok
  } catch (error) {
    return reportError(error, verbose)
  }
}

async function resolveSubCommand(
  command: CommandDef,
  words: string[],
): Promise<{ command: CommandDef; parent?: CommandDef }> {
  let current = command
  let parent: CommandDef | undefined
  for (const word of words) {
    const subs = typeof current.subCommands === 'function' ? await current.subCommands() : await current.subCommands
    const next = subs?.[word]
    if (!next) {
      // Past the first level a word may be an option's value (`serve --model DIR --help`): show the command found so far.
      if (subs && current === command)
        throw new UsageError(`unknown command '${word}'`, "run 'dbcluster --help' for the list")
      break
    }
    parent = current
    current = typeof next === 'function' ? await next() : await next
  }
  return { command: current, parent }
}

function reportError(error: unknown, verbose: boolean): number {
  if (error instanceof DbcError) {
    consola.error(`${error.message}${error.hint ? ` — ${error.hint}` : ''}`)
    if (verbose && error.stack) consola.log(error.stack)
    return error instanceof UsageError
      ? ExitCode.usage
      : error instanceof InterruptedError
        ? ExitCode.interrupted
        : ExitCode.failure
  }
  const citty = error as { code?: string; message?: string }
  if (citty && typeof citty.code === 'string' && (citty.code.startsWith('E_') || citty.code === 'EARG')) {
    consola.error(`${citty.message} — run with --help for usage`)
    return ExitCode.usage
  }
  consola.error(error instanceof Error ? error.message : String(error))
  if (verbose && error instanceof Error && error.stack) consola.log(error.stack)
  return ExitCode.failure
}
