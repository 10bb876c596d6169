/** Keeps docs/architecture's dependency order true: no file under src/ imports a folder above its own. */
import { expect, test } from 'bun:test'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const SRC = new URL('../src', import.meta.url).pathname

/** Which folders each folder may import (shared root files such as errors.ts are open to all). */
const ALLOWED: Record<string, string[]> = {
  cli: ['*'],
  doctor: ['discovery', 'trust'],
  'rdma-ping': ['tensor-parallel', 'doctor', 'link', 'trust', 'discovery'],
  'tensor-parallel': ['engine', 'cluster', 'model', 'tensor', 'link', 'trust', 'doctor', 'coordinator'],
  node: [
    'tensor-parallel',
    'engine',
    'cluster',
    'model',
    'tensor',
    'link',
    'trust',
    'discovery',
    'coordinator',
    'distribution',
    'compute',
  ],
  bench: ['api', 'engine', 'cluster', 'model', 'tensor', 'link', 'trust', 'discovery', 'coordinator', 'distribution'],
  api: ['engine', 'cluster', 'model', 'tensor', 'link', 'trust', 'discovery', 'coordinator'],
  engine: ['model', 'tensor'],
  cluster: ['compute', 'model', 'tensor', 'link', 'trust', 'discovery', 'coordinator', 'distribution'],
  compute: ['engine', 'model', 'tensor'],
  discovery: ['link', 'trust', 'coordinator'],
  coordinator: ['trust'],
  distribution: ['model', 'link', 'trust'],
  model: ['tensor'],
  link: ['trust'],
  trust: [],
  tensor: [],
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : []
  })
}

test('imports under src/ only point down the dependency order', () => {
  const violations: string[] = []
  const all = files(SRC)
  expect(all.length).toBeGreaterThan(5)
  for (const file of all) {
    const from = relative(SRC, file).split('/')[0]!
    if (!(from in ALLOWED)) continue // root files: main.ts, errors.ts, version.ts
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*['"](\.[^'"]+)['"]/g)) {
      const target = relative(SRC, resolve(dirname(file), m[1]!))
      if (target.startsWith('..')) continue
      const to = target.split('/')[0]!
      if (!target.includes('/') || to === from) continue
      const allowed = ALLOWED[from]!
      if (!allowed.includes('*') && !allowed.includes(to)) violations.push(`${relative(SRC, file)} imports ${target}`)
    }
  }
  expect(violations).toEqual([])
})

// The compute shim's tables (its tensor calls, and the tensor-parallel socket calls and the link's AEAD and frame calls beside the
// code that uses them), and
// the macOS bridge's (trust sits below tensor, and the bridge is its own macOS-only library).
test('only the shim and bridge binding files import bun:ffi', () => {
  const importers = files(SRC).filter((f) => /from ['"]bun:ffi['"]/.test(readFileSync(f, 'utf8')))
  expect(importers.map((f) => relative(SRC, f)).sort()).toEqual([
    'link/native-aead.ts',
    'link/native-channel.ts',
    'tensor-parallel/native-socket.ts',
    'tensor/native.ts',
    'trust/macos-bridge.ts',
  ])
})

// Commands parse flags and call the domain (src/node/, src/api/serve-api.ts); synthetic models keep their per-family
// parts in arch/*.synth.ts. These stay small so that a new role or family does not grow them again.
test('serve and synth stay thin', () => {
  const lines = (path: string) => readFileSync(join(SRC, path), 'utf8').split('\n').length - 1
  expect(lines('cli/serve.ts')).toBeLessThanOrEqual(200)
  expect(lines('model/synth.ts')).toBeLessThanOrEqual(200)
})
