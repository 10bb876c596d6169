/** Every C header bun:ffi opens must match its TS dlopen table: same names, same order, same arity. Runs on any OS, so a
 * symbol added to a header without its table (or to a table without its header) fails on Linux CI too. */
import { describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { ABI_VERSION, MLX_DISTRIBUTED_SYMBOLS, SAMPLE_SYMBOLS, SYMBOLS } from '../../src/tensor/native.ts'
import { TP_SOCKET_SYMBOLS } from '../../src/tensor-parallel/native-socket.ts'
import { AEAD_SYMBOLS } from '../../src/link/native-aead.ts'
import { LINK_CHANNEL_SYMBOLS } from '../../src/link/native-channel.ts'
import { MACOS_SYMBOLS } from '../../src/trust/macos-bridge.ts'
import { cDeclarations, tableDeclarations } from '../support/c-declarations.ts'

const FFI = new URL('../../ffi/', import.meta.url).pathname
const read = (header: string) => readFileSync(join(FFI, header), 'utf8')
const LAST_ERROR = { name: 'dbc_last_error', arity: 0 }

/** Each header, its table, what the table adds after the header's own symbols, and how many symbols it holds at least
 * (a floor, so a parser that finds nothing cannot pass). */
const SEAMS = [
  { header: 'dbc.h', table: 'SYMBOLS', file: 'src/tensor/native.ts', symbols: SYMBOLS, after: [], atLeast: 30 },
  {
    header: 'tp_socket.h',
    table: 'TP_SOCKET_SYMBOLS',
    file: 'src/tensor-parallel/native-socket.ts',
    symbols: TP_SOCKET_SYMBOLS,
    after: [LAST_ERROR],
    atLeast: 14,
  },
  {
    header: 'aead.h',
    table: 'AEAD_SYMBOLS',
    file: 'src/link/native-aead.ts',
    symbols: AEAD_SYMBOLS,
    after: [LAST_ERROR],
    atLeast: 3,
  },
  {
    header: 'link_channel.h',
    table: 'LINK_CHANNEL_SYMBOLS',
    file: 'src/link/native-channel.ts',
    symbols: LINK_CHANNEL_SYMBOLS,
    after: [LAST_ERROR],
    atLeast: 6,
  },
  {
    header: 'sample.h',
    table: 'SAMPLE_SYMBOLS',
    file: 'src/tensor/native.ts',
    symbols: SAMPLE_SYMBOLS,
    after: [LAST_ERROR],
    atLeast: 2,
  },
  {
    header: 'mlx_distributed.h',
    table: 'MLX_DISTRIBUTED_SYMBOLS',
    file: 'src/tensor/native.ts',
    symbols: MLX_DISTRIBUTED_SYMBOLS,
    after: [LAST_ERROR],
    atLeast: 10,
  },
  {
    header: 'macos/dbc_macos.h',
    table: 'MACOS_SYMBOLS',
    file: 'src/trust/macos-bridge.ts',
    symbols: MACOS_SYMBOLS,
    after: [],
    atLeast: 10,
  },
] as const

const opening = (header: string) => /^\/\*[\s\S]*?\*\//.exec(read(header))?.[0].replace(/\s*\n\s*\*\s*/g, ' ') ?? ''

describe.each(SEAMS)('ffi/$header', ({ header, table, file, symbols, after, atLeast }) => {
  test(`${table} (${file}) lists its symbols in header order, with the same arity`, () => {
    const fromHeader = cDeclarations(read(header))
    expect(fromHeader.length).toBeGreaterThanOrEqual(atLeast)
    expect(tableDeclarations(symbols)).toEqual([...fromHeader, ...after])
  })

  test('opens by saying what it is and which TS table mirrors it', () => {
    expect(opening(header)).toStartWith(`/* ${header.split('/').pop()} — `)
    expect(opening(header)).toContain(`${table} in ${file}`)
  })
})

test('every other header under ffi/ says it is not part of the ABI', () => {
  const headers = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? headers(join(dir, e.name)) : e.name.endsWith('.h') ? [relative(FFI, join(dir, e.name))] : [],
    )
  const seams = new Set<string>(SEAMS.map((s) => s.header))
  const unaccounted = headers(FFI).filter((h) => !seams.has(h) && !opening(h).includes('Not part of the ABI'))
  // a new ABI header goes into SEAMS with its table; an internal one says "Not part of the ABI" in its opening comment
  expect(unaccounted).toEqual([])
})

test('the ABI version constant matches the header', () => {
  expect(read('dbc.h')).toContain(`#define DBC_ABI_VERSION ${ABI_VERSION}`)
})
