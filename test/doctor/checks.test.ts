/** Doctor checks: real runs on this machine (files, coordinator over HTTP) and macOS checks fed sample outputs. */
import { expect, test } from 'bun:test'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  checkCoordinator,
  checkHardwareTrust,
  checkIdentityKey,
  checkMemory,
  checkOsVersion,
  checkPins,
  checkRdmaEnabled,
  checkThunderbolt,
  checkTpSealing,
  defaultEnv,
  runDoctor,
} from '../../src/doctor/checks.ts'
import { NativeTpChannel } from '../../src/tensor-parallel/sealed-group.ts'
import { probeMacosBridge } from '../../src/trust/macos-bridge.ts'
import { compileStandIn } from '../support/macos-bridge-stand-in.ts'
import { runWithTimeout } from '../../src/doctor/run-with-timeout.ts'

const dir = mkdtempSync(join(tmpdir(), 'doctor-'))
const env = (extra = {}) =>
  defaultEnv({ keyFile: join(dir, 'identity.key'), pinFile: join(dir, 'pins.json'), ...extra })

test('a hanging command is killed at the timeout; a missing one is reported', async () => {
  const t = performance.now()
  const r = await runWithTimeout(['sleep', '10'], 200)
  expect(r.ok).toBe(false)
  expect(r.reason).toContain('timed out')
  expect(performance.now() - t).toBeLessThan(3000)
  expect((await runWithTimeout(['definitely-not-a-command-xyz'])).reason).toContain('not found')
  expect(await runWithTimeout(['echo', 'hi'])).toEqual({ ok: true, stdout: 'hi\n' })
})

test('identity key: missing fails with the fix, 0644 fails, 0600 passes', () => {
  expect(checkIdentityKey(env())).toMatchObject({ status: 'FAIL', fix: "run 'dbcluster identity show' to create one" })
  const key = join(dir, 'identity.key')
  writeFileSync(key, 'x')
  chmodSync(key, 0o644)
  expect(checkIdentityKey(env())).toMatchObject({ status: 'FAIL', fix: `run 'chmod 600 ${key}'` })
  chmodSync(key, 0o600)
  expect(checkIdentityKey(env()).status).toBe('PASS')
  // A Secure Enclave identity's blob file beside it is what gets checked when present.
  const blob = join(dir, 'identity.enclave')
  writeFileSync(blob, '{}')
  chmodSync(blob, 0o644)
  expect(checkIdentityKey(env())).toMatchObject({ status: 'FAIL', fix: `run 'chmod 600 ${blob}'` })
  chmodSync(blob, 0o600)
  expect(checkIdentityKey(env())).toMatchObject({ status: 'PASS', detail: `${blob} (mode 600)` })
  rmSync(blob)
})

test('hardware trust: a software key is software at most; an enclave key needs Apple MDA, and both say how to get it', () => {
  const soft = checkHardwareTrust(env())
  expect(soft).toMatchObject({ status: 'SKIP', detail: 'software key file: software trust at most' })
  expect(soft.fix).toContain("'dbcluster identity init'")
  expect(soft.fix).toContain('--mda-chain')
  const blob = join(dir, 'identity.enclave')
  writeFileSync(blob, '{}')
  const enclave = checkHardwareTrust(env())
  expect(enclave.detail).toContain('only with a verified Apple managed device attestation')
  expect(enclave.fix).toContain("DeviceAttestationNonce set to the 'MDA nonce' that 'dbcluster identity show' prints")
  rmSync(blob)
})

test('pinned keys: the store openLocalPinStore would use; a Keychain pin that is not a pin fails with the fix', () => {
  const noBridge = () => ({
    available: false as const,
    reason: 'the macOS bridge exists only on macOS (this is linux)',
  })
  const pins = join(mkdtempSync(join(tmpdir(), 'doctor-pins-')), 'pins.json')
  expect(checkPins(env({ pinFile: pins, macosBridge: noBridge, pinStoreRequest: 'auto' }))).toMatchObject({
    status: 'SKIP',
    detail: expect.stringContaining('not created yet'),
  })
  expect(checkPins(env({ pinFile: pins, macosBridge: noBridge, pinStoreRequest: 'keychain' }))).toMatchObject({
    status: 'FAIL',
    detail: expect.stringContaining('DBCLUSTER_PIN_STORE=keychain, but the Keychain cannot be used'),
    fix: 'unset DBCLUSTER_PIN_STORE to use the pin file',
  })
  const lib = compileStandIn()
  if (!lib) return
  // The stand-in's Keychain answers "service|account" for every item, which is no pin.
  const standIn = () => probeMacosBridge({ platform: 'darwin', candidates: [lib] })
  expect(checkPins(env({ pinFile: pins, macosBridge: standIn, pinStoreRequest: 'auto' }))).toMatchObject({
    status: 'FAIL',
    detail: `Keychain item 'a' of '${`dbcluster pins ${join(pins, '..')}`}' is malformed`,
    fix: 're-pin it through the coordinator',
  })
  expect(checkPins(env({ pinFile: pins, macosBridge: standIn, pinStoreRequest: 'file' })).status).toBe('SKIP')
})

test('free memory against a plan', () => {
  expect(checkMemory(env({ freeBytes: () => 2 ** 30 })).status).toBe('SKIP')
  expect(checkMemory(env({ freeBytes: () => 2 ** 30, needBytes: 2 ** 31 })).status).toBe('FAIL')
  expect(checkMemory(env({ freeBytes: () => 2 ** 32, needBytes: 2 ** 31 })).status).toBe('PASS')
})

test('tensor-parallel sealing: PASS where libcrypto loads, SKIP with how to install it where it does not', () => {
  expect(checkTpSealing(env({ nativeTpSealing: () => true }))).toMatchObject({ status: 'PASS' })
  expect(checkTpSealing(env({ nativeTpSealing: () => false, platform: 'darwin' })).detail).toContain(
    'brew install openssl@3',
  )
  expect(checkTpSealing(env({ nativeTpSealing: () => false, platform: 'linux' })).detail).toContain(
    'apt install libssl3',
  )
  expect(checkTpSealing(env()).detail).toBe('not probed')
  // this machine, for real
  expect(checkTpSealing(env({ nativeTpSealing: () => NativeTpChannel.available() })).status).toBe(
    NativeTpChannel.available() ? 'PASS' : 'SKIP',
  )
})

test('coordinator: reachable with small skew, skewed clock fails, unreachable fails', async () => {
  const server = Bun.serve({ port: 0, fetch: () => new Response('{}') })
  try {
    const [reach, skew] = await checkCoordinator(env({ coordinator: `127.0.0.1:${server.port}` }))
    expect(reach!.status).toBe('PASS')
    expect(skew!.status).toBe('PASS')
    const [, skewed] = await checkCoordinator(
      env({ coordinator: `http://127.0.0.1:${server.port}`, now: () => Date.now() + 60_000 }),
    )
    expect(skewed).toMatchObject({ status: 'FAIL', name: 'clock skew' })
  } finally {
    server.stop(true)
  }
  const [down] = await checkCoordinator(env({ coordinator: `127.0.0.1:${server.port}` }))
  expect(down!.status).toBe('FAIL')
})

test('macOS checks SKIP on Linux with the reason, and parse tool output on darwin', async () => {
  expect((await checkRdmaEnabled(env({ platform: 'linux' }))).detail).toContain('macOS only')
  const mac = (out: string, ok = true) =>
    env({ platform: 'darwin', run: async () => ({ ok, stdout: out, reason: ok ? undefined : 'rdma_ctl not found' }) })
  expect((await checkRdmaEnabled(mac('disabled\n'))).status).toBe('FAIL')
  expect((await checkRdmaEnabled(mac('enabled\n'))).status).toBe('PASS')
  expect((await checkRdmaEnabled(mac('', false))).detail).toBe('rdma_ctl not found')
  expect((await checkThunderbolt(mac('    Thunderbolt/USB4 Bus 0:\n          Speed: Up to 40 Gb/s x1\n'))).status).toBe(
    'FAIL',
  )
  expect((await checkOsVersion(mac('ProductVersion:\t26.1\n'))).status).toBe('FAIL')
  expect((await checkOsVersion(mac('ProductVersion:\t26.2\n'))).status).toBe('PASS')
})

test('runDoctor on this machine returns every check', async () => {
  const names = (await runDoctor(env())).map((r) => r.name)
  expect(names).toContain('OS version')
  expect(names).toContain('clock skew')
  expect(names).toContain('OS versions across nodes')
  expect(names).toContain('Thunderbolt Bridge loop')
  expect(names).toContain('RDMA device → peer')
  expect(names).toContain('tensor-parallel sealing')
  expect(names).toContain('hardware trust')
  expect(names.length).toBe(17)
})
