/** `dbcluster bench link --json` end to end: two real processes, sealed and plain in one run, the documented JSON shape. */
import { expect, test } from 'bun:test'

const ROOT = new URL('../..', import.meta.url).pathname

test('bench link --json: sizes with sealed, plain and raw round trips, and AEAD and frame-channel GB/s per cipher', async () => {
  const proc = Bun.spawn(
    [
      process.execPath,
      'src/main.ts',
      'bench',
      'link',
      '--json',
      '--sizes',
      '4K,64K',
      '--rounds',
      '5',
      '--aead-sizes',
      '4K',
      '--file-size',
      '0',
    ],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  expect(code).toBe(0)
  const result = JSON.parse(out) as {
    frames: string
    sizes: {
      bytes: number
      rounds: number
      sealed_rtt_us_p50: number
      plain_rtt_us_p50: number
      raw_rtt_us_p50: number
      sealed_gbps: number
      plain_gbps: number
      ratio: number
      sealed_vs_raw: number
      plain_vs_raw: number
    }[]
    aead: { cipher: string; bytes: number; gbps: number }[]
    channel: { cipher: string; implementation: string; bytes: number; gbps: number }[]
  }
  expect(result.sizes.map((s) => [s.bytes, s.rounds])).toEqual([
    [4096, 5],
    [65536, 5],
  ])
  for (const s of result.sizes) {
    expect(s.sealed_rtt_us_p50).toBeGreaterThan(1)
    expect(s.plain_rtt_us_p50).toBeGreaterThan(1)
    // throughput is the payload there and back over the median round trip
    expect(s.sealed_gbps).toBeCloseTo((2 * s.bytes) / (s.sealed_rtt_us_p50 * 1e3), 1)
    expect(s.ratio).toBeCloseTo(s.sealed_rtt_us_p50 / s.plain_rtt_us_p50, 1)
    // the bare socket echo of the same payload, in the same rounds
    expect(s.raw_rtt_us_p50).toBeGreaterThan(1)
    expect(s.sealed_vs_raw).toBeCloseTo(s.sealed_rtt_us_p50 / s.raw_rtt_us_p50, 1)
    expect(s.plain_vs_raw).toBeCloseTo(s.plain_rtt_us_p50 / s.raw_rtt_us_p50, 1)
  }
  const { nativeChannel } = await import('../../src/link/native-channel.ts')
  const native = nativeChannel()
  expect(result.frames).toBe(
    native?.has.has('aes-256-gcm')
      ? 'native, libcrypto through the shim (link channel)'
      : 'TypeScript channel, native, node:crypto',
  )
  // the frame channel: C where the shim loads, and the TypeScript one, per cipher
  expect(result.channel.map((c) => [c.cipher, c.implementation.split(',')[0]])).toEqual(
    ['aes-256-gcm', 'chacha20-poly1305'].flatMap((cipher) => [
      ...(native?.has.has(cipher as 'aes-256-gcm') ? [[cipher, 'native']] : []),
      [cipher, 'TypeScript channel'],
    ]),
  )
  for (const c of result.channel) expect(c.gbps).toBeGreaterThan(0.001)
  expect(result.aead.map((a) => [a.cipher, a.bytes])).toEqual([
    ['aes-256-gcm', 4096],
    ['chacha20-poly1305', 4096],
  ])
  for (const a of result.aead) expect(a.gbps).toBeGreaterThan(0.001)
}, 30_000)

test('bench link refuses a bad --rounds as a usage error', async () => {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'bench', 'link', '--rounds', '0'], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
  expect(code).toBe(2)
  expect(err).toContain('--rounds must be a positive integer')
})

test('bench link --cipher chacha20-poly1305: the round trips seal with it, natively where the shim loads', async () => {
  const proc = Bun.spawn(
    [
      ...[process.execPath, 'src/main.ts', 'bench', 'link', '--json', '--cipher', 'chacha20-poly1305'],
      ...['--sizes', '4K', '--rounds', '3', '--aead-sizes', '4K', '--file-size', '0'],
    ],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  expect(code).toBe(0)
  const result = JSON.parse(out) as { cipher: string; aead: { cipher: string; implementation: string }[] }
  expect(result.cipher).toBe('chacha20-poly1305')
  const { nativeAead } = await import('../../src/link/native-aead.ts')
  expect(result.aead.find((a) => a.cipher === 'chacha20-poly1305')!.implementation).toBe(
    nativeAead()?.has('chacha20-poly1305') ? 'native, libcrypto through the shim' : 'JavaScript, @noble/ciphers',
  )
}, 30_000)

test('bench link refuses an unknown --cipher by name', async () => {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'bench', 'link', '--cipher', 'rot13'], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
  expect(code).toBe(2)
  expect(err).toContain("unknown --cipher 'rot13'")
})

test('bench link --frames script: the TypeScript channel seals the round trips; --file-repeat gives every run', async () => {
  const proc = Bun.spawn(
    [
      ...[process.execPath, 'src/main.ts', 'bench', 'link', '--json', '--frames', 'script', '--sizes', '4K'],
      ...['--rounds', '3', '--aead-sizes', '4K', '--file-size', '2M', '--file-repeat', '2'],
    ],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  expect(code).toBe(0)
  const result = JSON.parse(out) as {
    frames: string
    file_transfer: { sealed_runs: number[]; plain_runs: number[]; sealed_seconds: number; plain_seconds: number }
  }
  expect(result.frames).toStartWith('TypeScript channel')
  const f = result.file_transfer
  expect([f.sealed_runs.length, f.plain_runs.length]).toEqual([2, 2])
  expect(f.sealed_seconds).toBeCloseTo((f.sealed_runs[0]! + f.sealed_runs[1]!) / 2, 2)
}, 60_000)

test('bench link refuses an unknown --frames', async () => {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'bench', 'link', '--frames', 'fast'], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited])
  expect(code).toBe(2)
  expect(err).toContain("unknown --frames 'fast'")
})
