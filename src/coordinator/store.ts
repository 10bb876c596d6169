/** The coordinator's persistent state in SQLite (bun:sqlite, WAL): accounts, hashed tokens, providers, rosters — prepared statements only. */
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs'
import { Database, type SQLQueryBindings, type Statement } from 'bun:sqlite'
import type { KeyKind } from '../trust/identity.ts'
import { migrate } from './migrations.ts'
import type { TrustLevel } from './trust-level.ts'
import type { ProviderKind, ProviderRecord, ProviderStatus } from './provider-record.ts'

interface ProviderRow {
  serial: string
  account_id: number
  kind: ProviderKind
  public_key: string
  key_kind: KeyKind
  key_verified: number
  attested: number
  status: ProviderStatus
  status_reason: string | null
  rdma_enabled: number
  hostname: string | null
  chip: string | null
  memory_bytes: number | null
  attestation: string | null
  cluster_trust: TrustLevel | null
  mda_verified: number
  registered_at: number
  last_seen: number
}

const toRecord = (r: ProviderRow): ProviderRecord => ({
  serial: r.serial,
  accountId: r.account_id,
  kind: r.kind,
  publicKey: r.public_key,
  keyKind: r.key_kind,
  keyVerified: r.key_verified === 1,
  attested: r.attested === 1,
  status: r.status,
  statusReason: r.status_reason,
  rdmaEnabled: r.rdma_enabled === 1,
  hostname: r.hostname,
  chip: r.chip,
  memoryBytes: r.memory_bytes,
  attestation: r.attestation,
  clusterTrust: r.cluster_trust,
  mdaVerified: r.mda_verified === 1,
  registeredAt: r.registered_at,
  lastSeen: r.last_seen,
})

type Params = Record<string, string | number | null>

export interface Account {
  id: number
  name: string
}

export interface StoredRoster {
  clusterId: string
  accountId: number
  body: string
  signature: string
  trustLevel: string
  createdAt: number
  expiresAt: number
  members: string[]
}

export class CoordinatorStore {
  readonly db: Database
  readonly migrationsApplied: number[]
  readonly #s: {
    accountByName: Statement<Account, [Params]>
    insertAccount: Statement<Account, [Params]>
    insertToken: Statement<unknown, [Params]>
    accountForToken: Statement<Account, [Params]>
    deleteToken: Statement<{ account_id: number }, [Params]>
    deleteAccountTokens: Statement<{ hash: string }, [Params]>
    deleteProvider: Statement<{ serial: string }, [Params]>
    getProvider: Statement<ProviderRow, [Params]>
    upsertProvider: Statement<unknown, [Params]>
    touch: Statement<{ status: ProviderStatus }, [Params]>
    markOffline: Statement<unknown, [Params]>
    markSilentOffline: Statement<{ serial: string }, [Params]>
    markAllOffline: Statement<unknown, [Params]>
    providersOfAccount: Statement<ProviderRow, [Params]>
    rdmaCandidates: Statement<ProviderRow, []>
    statusCounts: Statement<{ status: ProviderStatus; n: number }, []>
    insertRoster: Statement<unknown, [Params]>
    insertRosterMember: Statement<unknown, [Params]>
    getRoster: Statement<Omit<StoredRoster, 'members'>, [Params]>
    rosterMembers: Statement<{ serial: string }, [Params]>
  }

  constructor(path: string) {
    // tokens' hashes, every machine's key and account: only this user reads the file (and its WAL and index files)
    const created = path !== ':memory:' && !existsSync(path)
    if (created) closeSync(openSync(path, 'a', 0o600))
    this.db = new Database(path, { create: true, strict: true })
    this.db.run('PRAGMA journal_mode = WAL')
    if (path !== ':memory:')
      for (const file of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(file)) chmodSync(file, 0o600)
    // WAL + NORMAL: a commit survives a process crash; only an OS crash can lose the last transactions.
    this.db.run('PRAGMA synchronous = NORMAL')
    this.db.run('PRAGMA foreign_keys = ON')
    this.db.run('PRAGMA busy_timeout = 5000')
    this.migrationsApplied = migrate(this.db)
    const q = <R, P extends SQLQueryBindings[] = [Params]>(sql: string) =>
      this.db.prepare(sql) as unknown as Statement<R, P>
    this.#s = {
      accountByName: q('SELECT id, name FROM accounts WHERE name = $name'),
      insertAccount: q('INSERT INTO accounts (name, created_at) VALUES ($name, $now) RETURNING id, name'),
      insertToken: q('INSERT INTO tokens (hash, account_id, created_at) VALUES ($hash, $account, $now)'),
      accountForToken: q(
        'SELECT a.id AS id, a.name AS name FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.hash = $hash',
      ),
      deleteToken: q('DELETE FROM tokens WHERE hash = $hash RETURNING account_id'),
      deleteAccountTokens: q(
        'DELETE FROM tokens WHERE account_id = (SELECT id FROM accounts WHERE name = $name) RETURNING hash',
      ),
      deleteProvider: q('DELETE FROM providers WHERE serial = $serial RETURNING serial'),
      getProvider: q('SELECT * FROM providers WHERE serial = $serial'),
      upsertProvider:
        q(`INSERT INTO providers (serial, account_id, kind, public_key, key_kind, key_verified, attested, status, status_reason,
          rdma_enabled, hostname, chip, memory_bytes, attestation, cluster_trust, mda_verified, registered_at, last_seen)
        VALUES ($serial, $account, $kind, $publicKey, $keyKind, $keyVerified, $attested, $status, $statusReason,
          $rdma, $hostname, $chip, $memoryBytes, $attestation, $clusterTrust, $mdaVerified, $registeredAt, $lastSeen)
        ON CONFLICT (serial) DO UPDATE SET account_id = excluded.account_id, kind = excluded.kind, public_key = excluded.public_key,
          key_kind = excluded.key_kind, key_verified = excluded.key_verified, attested = excluded.attested, status = excluded.status,
          status_reason = excluded.status_reason, rdma_enabled = excluded.rdma_enabled, hostname = excluded.hostname, chip = excluded.chip,
          memory_bytes = excluded.memory_bytes, attestation = excluded.attestation, cluster_trust = excluded.cluster_trust, mda_verified = excluded.mda_verified, last_seen = excluded.last_seen`),
      touch:
        q(`UPDATE providers SET last_seen = $now, status = CASE WHEN status = 'offline' THEN 'online' ELSE status END,
          status_reason = CASE WHEN status = 'offline' THEN NULL ELSE status_reason END
        WHERE serial = $serial RETURNING status`),
      markOffline: q(
        `UPDATE providers SET status = 'offline', status_reason = $reason WHERE serial = $serial AND status = 'online'`,
      ),
      markSilentOffline: q(`UPDATE providers SET status = 'offline', status_reason = $reason
        WHERE status = 'online' AND last_seen < $before RETURNING serial`),
      markAllOffline: q(`UPDATE providers SET status = 'offline', status_reason = $reason WHERE status = 'online'`),
      providersOfAccount: q('SELECT * FROM providers WHERE account_id = $account ORDER BY serial'),
      rdmaCandidates: q<ProviderRow, []>(`SELECT * FROM providers
        WHERE status = 'online' AND rdma_enabled = 1 AND attested = 1 AND kind = 'machine' ORDER BY serial`),
      statusCounts: q<{ status: ProviderStatus; n: number }, []>(
        'SELECT status, COUNT(*) AS n FROM providers GROUP BY status',
      ),
      insertRoster:
        q(`INSERT INTO rosters (cluster_id, account_id, body, signature, trust_level, created_at, expires_at)
        VALUES ($clusterId, $account, $body, $signature, $trustLevel, $createdAt, $expiresAt)`),
      insertRosterMember: q(
        'INSERT INTO roster_members (cluster_id, position, serial) VALUES ($clusterId, $position, $serial)',
      ),
      getRoster: q(`SELECT cluster_id AS clusterId, account_id AS accountId, body, signature, trust_level AS trustLevel,
          created_at AS createdAt, expires_at AS expiresAt FROM rosters WHERE cluster_id = $clusterId`),
      rosterMembers: q('SELECT serial FROM roster_members WHERE cluster_id = $clusterId ORDER BY position'),
    }
  }

  /** The account with this name, created when absent. */
  ensureAccount(name: string, now: number): Account {
    return this.#s.accountByName.get({ name }) ?? this.#s.insertAccount.get({ name, now })!
  }

  addToken(accountId: number, tokenHash: string, now: number): void {
    this.#s.insertToken.run({ hash: tokenHash, account: accountId, now })
  }

  accountForTokenHash(tokenHash: string): Account | undefined {
    return this.#s.accountForToken.get({ hash: tokenHash }) ?? undefined
  }

  /** Revokes one token (by its hash); false when no such token exists. */
  revokeToken(tokenHash: string): boolean {
    return this.#s.deleteToken.all({ hash: tokenHash }).length > 0
  }

  /** Revokes every token of an account; how many there were. */
  revokeAccountTokens(name: string): number {
    return this.#s.deleteAccountTokens.all({ name }).length
  }

  /** Forgets a provider: its serial and key are free again (a machine with a new key registers afresh). */
  forgetProvider(serial: string): boolean {
    return this.#s.deleteProvider.all({ serial }).length > 0
  }

  getProvider(serial: string): ProviderRecord | undefined {
    const row = this.#s.getProvider.get({ serial })
    return row ? toRecord(row) : undefined
  }

  putProvider(p: ProviderRecord): void {
    this.#s.upsertProvider.run({
      serial: p.serial,
      account: p.accountId,
      kind: p.kind,
      publicKey: p.publicKey,
      keyKind: p.keyKind,
      keyVerified: p.keyVerified ? 1 : 0,
      attested: p.attested ? 1 : 0,
      status: p.status,
      statusReason: p.statusReason,
      rdma: p.rdmaEnabled ? 1 : 0,
      hostname: p.hostname,
      chip: p.chip,
      memoryBytes: p.memoryBytes,
      attestation: p.attestation,
      clusterTrust: p.clusterTrust,
      mdaVerified: p.mdaVerified ? 1 : 0,
      registeredAt: p.registeredAt,
      lastSeen: p.lastSeen,
    })
  }

  /** A heartbeat: refreshes last_seen and brings an offline provider back online (an untrusted one stays untrusted). */
  touch(serial: string, now: number): ProviderStatus | undefined {
    return this.#s.touch.get({ serial, now })?.status
  }

  markOffline(serial: string, reason: string): void {
    this.#s.markOffline.run({ serial, reason })
  }

  /** Marks every online provider not heard from since `before` offline; returns their serials. */
  markSilentOffline(before: number, reason: string): string[] {
    return this.#s.markSilentOffline.all({ before, reason }).map((r) => r.serial)
  }

  markAllOffline(reason: string): void {
    this.#s.markAllOffline.run({ reason })
  }

  providersOfAccount(accountId: number): ProviderRecord[] {
    return this.#s.providersOfAccount.all({ account: accountId }).map(toRecord)
  }

  /** Online, attested, RDMA-enabled machines: the pool the peer-list gate filters again (gate.ts). */
  rdmaCandidates(): ProviderRecord[] {
    return this.#s.rdmaCandidates.all().map(toRecord)
  }

  statusCounts(): Record<ProviderStatus, number> {
    const counts: Record<ProviderStatus, number> = { online: 0, offline: 0, untrusted: 0 }
    for (const r of this.#s.statusCounts.all()) counts[r.status] = r.n
    return counts
  }

  saveRoster(r: StoredRoster): void {
    this.db.transaction(() => {
      const { clusterId, accountId, body, signature, trustLevel, createdAt, expiresAt } = r
      this.#s.insertRoster.run({ clusterId, account: accountId, body, signature, trustLevel, createdAt, expiresAt })
      r.members.forEach((serial, position) => this.#s.insertRosterMember.run({ clusterId, position, serial }))
    })()
  }

  getRoster(clusterId: string): StoredRoster | undefined {
    const row = this.#s.getRoster.get({ clusterId })
    if (!row) return undefined
    return { ...row, members: this.#s.rosterMembers.all({ clusterId }).map((m) => m.serial) }
  }

  /** Folds the WAL into the main file and closes; every committed write is already durable before this. */
  close(): void {
    this.db.run('PRAGMA wal_checkpoint(TRUNCATE)')
    this.db.close()
  }
}
