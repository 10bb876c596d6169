/** `dbcluster coordinator`: run the embedded coordinator; `dbcluster coordinator token create` issues an API token. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import type { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { UsageError } from '../errors.ts'
import { startCoordinator } from '../coordinator/run-coordinator.ts'
import { CoordinatorStore } from '../coordinator/store.ts'
import { generateToken, hashToken } from '../coordinator/tokens.ts'
import { fingerprint } from '../trust/identity.ts'
import { mdaRoots } from '../trust/mda.ts'

const defaultDb = () => join(process.env.DBCLUSTER_HOME ?? join(homedir(), '.dbcluster'), 'coordinator.db')

const seconds = (value: string, name: string): number => {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`--${name} must be a positive number of seconds, got '${value}'`)
  return n
}

const dbArg = {
  type: 'string',
  description: 'SQLite database file (default: $DBCLUSTER_HOME/coordinator.db, ~/.dbcluster by default)',
  valueHint: 'FILE',
} as const

/** Whether argv names a subcommand (a word that is not a flag's value), the way citty finds one. */
function hasSubcommand(rawArgs: string[]): boolean {
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!
    if (a === '--') return false
    if (!a.startsWith('-')) return true
    if (VALUE_FLAGS.includes(a)) i++
  }
  return false
}

const tokenCreate = defineCommand({
  meta: {
    name: 'create',
    description:
      'Create an API token for an account (the account is created when new); the token is the last line printed, and only shown once',
  },
  args: {
    account: { type: 'string', description: 'Account name that the token acts as', required: true, valueHint: 'NAME' },
    db: dbArg,
  },
  run({ args }) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(args.account))
      throw new UsageError(`bad account name '${args.account}'`, 'use 1-64 characters of A-Z a-z 0-9 . _ @ -')
    const store = new CoordinatorStore(args.db ?? defaultDb())
    try {
      const now = Date.now()
      const account = store.ensureAccount(args.account, now)
      const token = generateToken()
      store.addToken(account.id, hashToken(token), now)
      consola.success(`token created for account '${account.name}' (stored hashed; it cannot be shown again)`)
      console.log(token)
    } finally {
      store.close()
    }
  },
})

const tokenRevoke = defineCommand({
  meta: {
    name: 'revoke',
    description:
      'Revoke one token (--token, or DBCLUSTER_COORDINATOR_TOKEN), or every token of an account (--account); works while the coordinator runs',
  },
  args: {
    token: {
      type: 'string',
      description: 'The token to revoke (or set DBCLUSTER_COORDINATOR_TOKEN)',
      valueHint: 'TOKEN',
    },
    account: { type: 'string', description: 'Revoke every token of this account', valueHint: 'NAME' },
    db: dbArg,
  },
  run({ args }) {
    const token = args.token ?? process.env.DBCLUSTER_COORDINATOR_TOKEN
    if (!token === !args.account)
      throw new UsageError('give exactly one of --token (or DBCLUSTER_COORDINATOR_TOKEN) and --account')
    const store = new CoordinatorStore(args.db ?? defaultDb())
    try {
      if (token) {
        if (!store.revokeToken(hashToken(token)))
          throw new UsageError('no such token (already revoked, or from another coordinator database)', 'check --db')
        consola.success('token revoked: requests and provider sockets with it are refused from now on')
      } else {
        const n = store.revokeAccountTokens(args.account!)
        if (n === 0) throw new UsageError(`account '${args.account}' has no tokens`, 'check the name and --db')
        consola.success(`${n} token(s) of account '${args.account}' revoked`)
      }
    } finally {
      store.close()
    }
  },
})

const token = defineCommand({
  meta: { name: 'token', description: 'Manage API tokens' },
  subCommands: { create: tokenCreate, revoke: tokenRevoke },
})

const providerForget = defineCommand({
  meta: {
    name: 'forget',
    description:
      'Forget a provider: its serial and key are free again, so a machine that really has a new key (reinstalled, replaced) registers afresh instead of staying untrusted',
  },
  args: {
    serial: { type: 'positional', description: 'The provider serial (or cluster:<id>)', required: true },
    db: dbArg,
  },
  run({ args }) {
    const store = new CoordinatorStore(args.db ?? defaultDb())
    try {
      if (!store.forgetProvider(args.serial))
        throw new UsageError(
          `no provider '${args.serial}' in this coordinator's database`,
          'check the serial (dbcluster coordinator lists them at /v1/account/providers) and --db',
        )
      consola.success(
        `forgot ${args.serial}: its next registration is taken as a new machine (peers that pinned its old key keep refusing the new one until that pin is removed)`,
      )
    } finally {
      store.close()
    }
  },
})

const provider = defineCommand({
  meta: { name: 'provider', description: 'Manage registered providers' },
  subCommands: { forget: providerForget },
})

const COORDINATOR_ARGS = {
  host: { type: 'string', description: 'Address to listen on', default: '127.0.0.1' },
  port: { type: 'string', description: 'TCP port (0 picks a free one)', default: '7470' },
  db: dbArg,
  key: {
    type: 'string',
    description: "The coordinator's signing key file, created 0600 on first start (default: <db>.key)",
    valueHint: 'FILE',
  },
  'offline-after': {
    type: 'string',
    description: 'Seconds without a heartbeat before a provider is marked offline',
    default: '90',
  },
  'attestation-max-age': {
    type: 'string',
    description: 'Seconds an attestation stays fresh (older ones are refused)',
    default: '300',
  },
  'mda-root': {
    type: 'string',
    description:
      "PEM file of the root(s) Apple managed device attestation chains must end at (default: Apple's Enterprise Attestation Root CA, built in)",
    valueHint: 'FILE',
  },
} as const

/** Flags that take a value, from the definition above (so a new flag cannot be mistaken for a subcommand). */
const VALUE_FLAGS = Object.entries(COORDINATOR_ARGS)
  .filter(([, a]) => a.type === 'string')
  .map(([name]) => `--${name}`)

export default defineCommand({
  meta: {
    name: 'coordinator',
    description:
      'Run the coordinator that vouches for machines: registrations, peer keys, RDMA peer lists, signed cluster rosters',
  },
  args: COORDINATOR_ARGS,
  subCommands: { token, provider },
  async run({ rawArgs, args }) {
    // citty runs a parent's run() after its subcommand: a positional word means a subcommand already ran.
    if (hasSubcommand(rawArgs)) return
    const port = Number(args.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new UsageError(`--port must be 0..65535, got '${args.port}'`)
    const log = consola.withTag('coordinator')
    const roots = args['mda-root'] ? readMdaRoots(args['mda-root']) : mdaRoots()
    const running = startCoordinator({
      dbPath: args.db ?? defaultDb(),
      keyPath: args.key,
      host: args.host,
      port,
      offlineAfterMs: seconds(args['offline-after'], 'offline-after') * 1000,
      attestationMaxAgeMs: seconds(args['attestation-max-age'], 'attestation-max-age') * 1000,
      mdaRoots: roots,
      log,
    })
    consola.info(
      `signing key ${running.keyCreated ? 'created' : 'loaded'}: ${running.keyPath} (fingerprint ${fingerprint(running.signer.publicKey)})`,
    )
    consola.info(
      `hardware trust needs an Apple managed device attestation chain ending at: ${roots.map((r) => `${r.subject.replace(/\n/g, ', ')} (SHA-256 ${r.fingerprint256.slice(0, 23)}…)`).join('; ')}`,
    )
    if (running.store.migrationsApplied.length)
      consola.info(`database migrated to version ${running.store.migrationsApplied.at(-1)}`)
    consola.success(`coordinator on ${running.url} (providers: /v1/provider/ws)`)
    console.log(`listening on ${running.url}`)
    await new Promise<void>((done) => {
      const stop = (signal: string) => {
        consola.info(`${signal}: closing provider sockets and the database`)
        void running.stop().then(() => {
          consola.info('coordinator stopped')
          done()
        })
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  },
})

/** --mda-root: every certificate in the file becomes a trust anchor; an unreadable file or one without a certificate is refused. */
function readMdaRoots(path: string): X509Certificate[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new UsageError(`--mda-root: cannot read ${path}: ${(error as Error).message}`)
  }
  try {
    return mdaRoots(text)
  } catch (error) {
    throw new UsageError(`--mda-root: ${path}: ${(error as Error).message}`, 'give a PEM file of CA certificates')
  }
}
