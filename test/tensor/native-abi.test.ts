/** The TS dlopen tables must match their headers (ffi/dbc.h, ffi/tp_socket.h): same names, same order, same arity. */
import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { ABI_VERSION, SYMBOLS } from '../../src/tensor/native.ts'
import { TP_SOCKET_SYMBOLS } from '../../src/tensor-parallel/native-socket.ts'
import { cDeclarations, tableDeclarations } from '../support/c-declarations.ts'

const header = readFileSync(new URL('../../ffi/dbc.h', import.meta.url), 'utf8')

test('every symbol in dbc.h is in the dlopen table, in header order, with the same arity', () => {
  const fromHeader = cDeclarations(header)
  expect(fromHeader.length).toBeGreaterThan(30)
  expect(tableDeclarations(SYMBOLS)).toEqual(fromHeader)
})

test('the ABI version constant matches the header', () => {
  expect(header).toContain(`#define DBC_ABI_VERSION ${ABI_VERSION}`)
})

test('the tensor-parallel socket table matches tp_socket.h, then dbc_last_error', () => {
  const fromHeader = cDeclarations(readFileSync(new URL('../../ffi/tp_socket.h', import.meta.url), 'utf8'))
  expect(fromHeader.length).toBeGreaterThan(8)
  expect(tableDeclarations(TP_SOCKET_SYMBOLS)).toEqual([...fromHeader, { name: 'dbc_last_error', arity: 0 }])
})
