/** The coordinator's schema, as numbered migrations kept in code; the database records its version in PRAGMA user_version. */
import type { Database } from 'bun:sqlite'
import { CoordinatorError } from './errors.ts'

export interface Migration {
  version: number
  name: string
  statements: readonly string[]
}

/** Append only: a released migration is never edited, a change is a new version. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'accounts, tokens, providers',
    statements: [
      `CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
      )`,
      `CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL
      )`,
      `CREATE TABLE providers (
        serial TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL CHECK (kind IN ('machine', 'cluster')),
        public_key TEXT NOT NULL,
        key_kind TEXT NOT NULL,
        key_verified INTEGER NOT NULL,
        attested INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('online', 'offline', 'untrusted')),
        status_reason TEXT,
        rdma_enabled INTEGER NOT NULL,
        hostname TEXT,
        chip TEXT,
        memory_bytes INTEGER,
        attestation TEXT,
        registered_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
      )`,
      'CREATE INDEX providers_by_account ON providers(account_id)',
      'CREATE INDEX providers_by_status ON providers(status, rdma_enabled, attested)',
    ],
  },
  {
    version: 2,
    name: 'cluster rosters',
    statements: [
      `CREATE TABLE rosters (
        cluster_id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        body TEXT NOT NULL,
        signature TEXT NOT NULL,
        trust_level TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      )`,
      `CREATE TABLE roster_members (
        cluster_id TEXT NOT NULL REFERENCES rosters(cluster_id),
        position INTEGER NOT NULL,
        serial TEXT NOT NULL,
        PRIMARY KEY (cluster_id, position)
      )`,
      // A cluster provider's trust is its weakest member's, not its head key's.
      'ALTER TABLE providers ADD COLUMN cluster_trust TEXT',
    ],
  },
  {
    version: 3,
    name: 'managed device attestation',
    // Earlier rows never had their Secure Enclave claim verified: they start unverified (software trust at most).
    statements: ['ALTER TABLE providers ADD COLUMN mda_verified INTEGER NOT NULL DEFAULT 0'],
  },
]

/** Which migrations a database at `current` still needs; refuses a database written by a newer binary. */
export function pendingMigrations(current: number, migrations: readonly Migration[] = MIGRATIONS): Migration[] {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1)
      throw new CoordinatorError('E_MIGRATION', `migration #${i} has version ${m.version}, expected ${i + 1}`)
  })
  const latest = migrations.length
  if (current > latest) {
    throw new CoordinatorError(
      'E_DB_TOO_NEW',
      `the coordinator database is at schema version ${current}; this binary knows up to ${latest}`,
      'run a newer dbcluster, or point --db at another file',
    )
  }
  return migrations.slice(current)
}

/** Applies every pending migration, each in its own transaction with its version bump; returns the versions applied. */
export function migrate(db: Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  const row = db.query('PRAGMA user_version').get() as { user_version: number }
  const applied: number[] = []
  for (const m of pendingMigrations(row.user_version, migrations)) {
    db.transaction(() => {
      for (const sql of m.statements) db.run(sql)
      // PRAGMA takes no bound parameters; the version is an integer from this file, never input.
      db.run(`PRAGMA user_version = ${Math.trunc(m.version)}`)
    })()
    applied.push(m.version)
  }
  return applied
}
