/** The TS dlopen table must match ffi/dbc.h: same names, same order, same arity. */
import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { ABI_VERSION, SYMBOLS } from '../../src/tensor/native.ts'

const header = readFileSync(new URL('../../ffi/dbc.h', import.meta.url), 'utf8')

function declarations(text: string): { name: string; arity: number }[] {
  const code = text
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join(' ')
  const out: { name: string; arity: number }[] = []
  for (const statement of code.split(';')) {
    const m = /(dbc_[a-z0-9_]+)\(([^)]*)\)\s*$/.exec(statement.replace(/\s+/g, ' ').trim())
    if (!m) continue
    const params = m[2]!.trim()
    out.push({ name: m[1]!, arity: params === 'void' || params === '' ? 0 : params.split(',').length })
  }
  return out
}

test('every symbol in dbc.h is in the dlopen table, in header order, with the same arity', () => {
  const fromHeader = declarations(header)
  expect(fromHeader.length).toBeGreaterThan(30)
  const fromTable: { name: string; arity: number }[] = Object.entries(SYMBOLS).map(([name, def]) => ({ name, arity: def.args.length as number }))
  expect(fromTable).toEqual(fromHeader)
})

test('the ABI version constant matches the header', () => {
  expect(header).toContain(`#define DBC_ABI_VERSION ${ABI_VERSION}`)
})
