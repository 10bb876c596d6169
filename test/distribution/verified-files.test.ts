/** The stage's record of verified files: unchanged files are trusted, any change (size, time, contents) or a damaged
 * record makes the file unknown again, and nothing is written when nothing changed. */
import { expect, test } from 'bun:test'
import { existsSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { VERIFIED_FILE, VerifiedFiles } from '../../src/distribution/verified-files.ts'

test('a recorded file counts until it changes; a damaged record trusts nothing; no change writes nothing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-verified-'))
  writeFileSync(join(dir, 'a.safetensors'), 'abc')
  const empty = VerifiedFiles.open(dir)
  empty.save()
  expect(existsSync(join(dir, VERIFIED_FILE))).toBe(false)

  const v = VerifiedFiles.open(dir)
  expect(v.has('a.safetensors', 'h1')).toBe(false)
  v.record('a.safetensors', 'h1')
  v.save()
  expect(VerifiedFiles.open(dir).has('a.safetensors', 'h1')).toBe(true)
  expect(VerifiedFiles.open(dir).has('a.safetensors', 'other-hash')).toBe(false)
  expect(VerifiedFiles.open(dir).has('missing.safetensors', 'h1')).toBe(false)

  utimesSync(join(dir, 'a.safetensors'), new Date(), new Date(Date.now() + 5000)) // touched: same bytes, new time
  expect(VerifiedFiles.open(dir).has('a.safetensors', 'h1')).toBe(false)

  writeFileSync(join(dir, VERIFIED_FILE), '{not json')
  expect(VerifiedFiles.open(dir).has('a.safetensors', 'h1')).toBe(false)
})
