/** Presets resolve to exactly what docs/rdma-ping.md's table says; explicit flags override them; an unknown one is refused. */
import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { parseSizes } from '../../src/rdma-ping/ping-rounds.ts'
import { PRESETS, resolvePingPlan, type PresetName } from '../../src/rdma-ping/presets.ts'

const DOC = new URL('../../docs/rdma-ping.md', import.meta.url).pathname

/** Rows of the docs' preset table: `| \`quick\` | 5 | 4K,256K | no | …`, `(none)` for no preset. */
function documentedPresets(): Map<string | undefined, { rounds: number; sizes: number[]; perRound: boolean }> {
  const rows = new Map<string | undefined, { rounds: number; sizes: number[]; perRound: boolean }>()
  for (const m of readFileSync(DOC, 'utf8').matchAll(
    /^\| *(?:`(\w+)`|\(none\)) *\| *(\d+) *\| *([\dKMG,]+) *\| *(yes|no) *\|/gm,
  ))
    rows.set(m[1], { rounds: Number(m[2]), sizes: parseSizes(m[3]!), perRound: m[4] === 'yes' })
  return rows
}

test('every preset, and no preset, resolves to the row the docs give it', () => {
  const rows = documentedPresets()
  expect([...rows.keys()].sort()).toEqual([undefined, ...Object.keys(PRESETS)].sort())
  for (const [preset, row] of rows)
    expect(resolvePingPlan({ preset })).toEqual({ preset: (preset ?? null) as PresetName | null, ...row })
})

test('the presets follow the seed: quick 5 rounds of small sizes, stress 100 rounds of large ones', () => {
  expect(resolvePingPlan({ preset: 'quick' })).toEqual({
    preset: 'quick',
    rounds: 5,
    sizes: [4096, 262144],
    perRound: false,
  })
  expect(resolvePingPlan({ preset: 'stress' }).sizes).toEqual([4 << 20, 64 << 20, 256 << 20])
  expect(resolvePingPlan({})).toEqual({
    preset: null,
    rounds: 20,
    sizes: [4096, 262144, 4 << 20, 64 << 20],
    perRound: false,
  })
})

test('explicit --rounds, --sizes and --per-round override the preset, one at a time', () => {
  expect(resolvePingPlan({ preset: 'stress', rounds: 3 })).toMatchObject({
    rounds: 3,
    sizes: [4 << 20, 64 << 20, 256 << 20],
  })
  expect(resolvePingPlan({ preset: 'stress', sizes: '1M' })).toMatchObject({
    rounds: 100,
    sizes: [1 << 20],
    perRound: true,
  })
  expect(resolvePingPlan({ preset: 'verbose', perRound: false })).toMatchObject({ rounds: 20, perRound: false })
  expect(resolvePingPlan({ preset: 'quick', perRound: true })).toMatchObject({ rounds: 5, perRound: true })
  expect(resolvePingPlan({ rounds: 7, sizes: '64M' })).toEqual({
    preset: null,
    rounds: 7,
    sizes: [64 << 20],
    perRound: false,
  })
})

test('an unknown preset is refused by name with the ones that exist', () => {
  expect(() => resolvePingPlan({ preset: 'fast' })).toThrow("unknown --preset 'fast'")
  try {
    resolvePingPlan({ preset: 'toString' })
    throw new Error('expected a throw')
  } catch (error) {
    expect(error).toMatchObject({ code: 'E_USAGE', message: "unknown --preset 'toString'" })
    expect((error as { hint: string }).hint).toContain('quick, verbose, stress')
  }
})
