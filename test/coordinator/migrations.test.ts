/** Schema migrations: pending sets, refusal of a newer database, upgrade of a version-1 database, idempotent reopen. */
import { Database } from 'bun:sqlite'
import { describe, expect, test } from 'bun:test'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { MIGRATIONS, migrate, pendingMigrations, type Migration } from '../../src/coordinator/migrations.ts'
import { CoordinatorStore } from '../../src/coordinator/store.ts'
import { tempDir } from './support.ts'

describe('pendingMigrations', () => {
  test('from 0 all, from the latest none, in between the rest', () => {
    expect(pendingMigrations(0).map((m) => m.version)).toEqual([1, 2, 3])
    expect(pendingMigrations(1).map((m) => m.version)).toEqual([2, 3])
    expect(pendingMigrations(MIGRATIONS.length)).toEqual([])
  })
  test('a database from a newer binary is refused', () => {
    expect(() => pendingMigrations(4)).toThrow(
      'the coordinator database is at schema version 4; this binary knows up to 3',
    )
  })
  test('versions must be 1..n in order', () => {
    const bad: Migration[] = [
      { version: 1, name: 'a', statements: [] },
      { version: 3, name: 'b', statements: [] },
    ]
    expect(() => pendingMigrations(0, bad)).toThrow('migration #1 has version 3, expected 2')
  })
})

describe('migrate', () => {
  test('a version-1 database is upgraded in place, its rows kept; running again applies nothing', () => {
    const db = new Database(':memory:')
    expect(migrate(db, MIGRATIONS.slice(0, 1))).toEqual([1])
    db.run("INSERT INTO accounts (name, created_at) VALUES ('old', 1)")
    expect(migrate(db)).toEqual([2, 3])
    expect((db.query('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(3)
    expect(db.query('SELECT name FROM accounts').all()).toEqual([{ name: 'old' }])
    const cols = (db.query('PRAGMA table_info(providers)').all() as { name: string }[]).map((c) => c.name)
    expect(cols).toContain('cluster_trust')
    expect(cols).toContain('mda_verified')
    expect(migrate(db)).toEqual([])
  })

  test('a failing migration rolls back whole, version unchanged', () => {
    const db = new Database(':memory:')
    const broken: Migration[] = [{ version: 1, name: 'broken', statements: ['CREATE TABLE t (x)', 'NOT SQL'] }]
    expect(() => migrate(db, broken)).toThrow()
    expect((db.query('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(0)
    expect(db.query("SELECT name FROM sqlite_master WHERE name = 't'").all()).toEqual([])
  })

  test('the store opens in WAL mode and survives reopen', () => {
    const path = join(tempDir(), 'c.db')
    const a = new CoordinatorStore(path)
    expect(a.migrationsApplied).toEqual([1, 2, 3])
    expect((a.db.query('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal')
    a.ensureAccount('alice', 1)
    // tokens' hashes and every machine's key: the file and its WAL are this user's alone
    for (const file of [path, `${path}-wal`]) expect(statSync(file).mode & 0o777).toBe(0o600)
    a.close()
    const b = new CoordinatorStore(path)
    expect(b.migrationsApplied).toEqual([])
    expect(b.ensureAccount('alice', 2)).toEqual({ id: 1, name: 'alice' })
    b.close()
  })
})
