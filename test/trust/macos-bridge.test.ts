/** The macOS bridge's seam, checked on any OS: the header, the Swift exports and the bun:ffi table agree, and the loader
 * refuses a wrong platform, a missing file, a file that is no library, a bridge of another ABI and an incomplete one.
 * On a Mac with the bridge built, it also loads for real. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probe as enclaveProbe } from '../../src/trust/identity-enclave.ts'
import { MACOS_BRIDGE_ABI, MACOS_SYMBOLS, probeMacosBridge, type MacosBridgeProbe } from '../../src/trust/macos-bridge.ts'
import { KeychainPinStore } from '../../src/trust/pin-store-keychain.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const reasonOf = (p: MacosBridgeProbe): string => (p.available ? 'available' : p.reason)
const dir = () => mkdtempSync(join(tmpdir(), 'dbc-bridge-'))

/** name → arity, in declaration order, from ffi/macos/dbc_macos.h. */
function headerSymbols(): [string, number][] {
  const text = readFileSync(join(ROOT, 'ffi/macos/dbc_macos.h'), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '')
  return [...text.matchAll(/\b(dbc_\w+)\s*\(([^)]*)\)\s*;/g)].map((m) => [m[1]!, m[2]!.trim() === 'void' ? 0 : m[2]!.split(',').length])
}

/** name → arity of every @_cdecl export in ffi/macos/*.swift. */
function swiftExports(): Map<string, number> {
  const exports = new Map<string, number>()
  for (const file of readdirSync(join(ROOT, 'ffi/macos')).filter((f) => f.endsWith('.swift'))) {
    const text = readFileSync(join(ROOT, 'ffi/macos', file), 'utf8')
    for (const m of text.matchAll(/@_cdecl\("(\w+)"\)\s*public func (\w+)\(([^)]*)\)/g)) {
      expect(m[2]).toBe(m[1]!)
      exports.set(m[1]!, [...m[3]!.matchAll(/\b_ \w+\s*:/g)].length)
    }
  }
  return exports
}

function compileLibrary(source: string): string | null {
  if (!Bun.which('cc')) return null
  const d = dir()
  writeFileSync(join(d, 'bridge.c'), source)
  const out = join(d, 'libdbc_macos.dylib')
  const r = Bun.spawnSync(['cc', '-shared', '-fPIC', '-o', out, join(d, 'bridge.c')], { stderr: 'pipe' })
  if (r.exitCode !== 0) throw new Error(r.stderr.toString())
  return out
}

describe('ABI agreement', () => {
  test('header, Swift @_cdecl exports and the bun:ffi table list the same symbols with the same arity, in header order', () => {
    const header = headerSymbols()
    expect(header.length).toBe(10)
    expect(Object.keys(MACOS_SYMBOLS)).toEqual(header.map(([name]) => name))
    for (const [name, arity] of header) expect([name, MACOS_SYMBOLS[name as keyof typeof MACOS_SYMBOLS].args.length as number]).toEqual([name, arity])
    expect(Object.fromEntries(swiftExports())).toEqual(Object.fromEntries(header))
  })

  test('the Swift ABI version is the one the loader expects', () => {
    const m = /let bridgeAbiVersion: Int32 = (\d+)/.exec(readFileSync(join(ROOT, 'ffi/macos/bridge.swift'), 'utf8'))
    expect(Number(m?.[1])).toBe(MACOS_BRIDGE_ABI)
  })
})

describe('loader refusals', () => {
  test('another platform, or no bridge file, says why and how to build it', () => {
    expect(probeMacosBridge({ platform: 'linux' })).toEqual({ available: false, reason: 'the macOS bridge exists only on macOS (this is linux)' })
    const missing = join(dir(), 'libdbc_macos.dylib')
    expect(probeMacosBridge({ platform: 'darwin', candidates: [missing] })).toEqual({
      available: false,
      reason: `libdbc_macos.dylib not found (looked at ${missing}); build it with 'bash scripts/build-macos-bridge.sh'`,
    })
  })

  test('a file that is not a library is refused with the loader message', () => {
    const bogus = join(dir(), 'libdbc_macos.dylib')
    writeFileSync(bogus, 'not a library')
    const p = probeMacosBridge({ platform: 'darwin', candidates: [bogus] })
    expect(reasonOf(p)).toStartWith(`cannot load the macOS bridge ${bogus}: `)
  })

  const cc = Bun.which('cc')
  test.skipIf(!cc)(`a bridge of another ABI version, or one missing symbols, is refused${cc ? '' : ' (skipped: no C compiler)'}`, () => {
    const old = compileLibrary('int dbc_mac_abi_version(void) { return 99; }\n')!
    expect(probeMacosBridge({ platform: 'darwin', candidates: [old] })).toEqual({ available: false, reason: `the macOS bridge ${old} has ABI 99, this build expects ${MACOS_BRIDGE_ABI}` })
    const partial = compileLibrary(`int dbc_mac_abi_version(void) { return ${MACOS_BRIDGE_ABI}; }\n`)!
    expect(reasonOf(probeMacosBridge({ platform: 'darwin', candidates: [partial] }))).toStartWith(`cannot load the macOS bridge ${partial}: `)
  })
})

/** A stand-in for the Apple frameworks behind the real ABI, compiled here so the bun:ffi wrapper's argument passing,
 * error messages and buffer growth run for real on any OS: no enclave, a Keychain that echoes "service|account", a
 * 3000-byte item that needs a second, larger buffer, and a write that fails the way a locked keychain does. */
const STAND_IN = `#include <stdint.h>
#include <string.h>
#include <stdio.h>
static const char *last = "";
static char echo[4096];
int32_t dbc_mac_abi_version(void) { return ${MACOS_BRIDGE_ABI}; }
const char *dbc_mac_last_error(void) { return last; }
int32_t dbc_se_available(void) { return 0; }
int32_t dbc_se_create(uint8_t *b, int32_t c, int32_t *n) { last = "this Mac has no Secure Enclave (SecureEnclave.isAvailable is false)"; return -3; }
int32_t dbc_se_public_key(const uint8_t *b, int32_t n, uint8_t *o) { last = "no enclave"; return -6; }
int32_t dbc_se_sign(const uint8_t *b, int32_t n, const uint8_t *m, int64_t ml, uint8_t *o) { last = "no enclave"; return -7; }
int32_t dbc_kc_set(const char *s, const char *a, const uint8_t *d, int32_t n) { last = "SecItemAdd/SecItemUpdate: User interaction is not allowed. (OSStatus -25308)"; return -10; }
static int32_t out(const char *t, int32_t len, uint8_t *o, int32_t cap, int32_t *n) { *n = len; if (len > cap) { last = "too small"; return -2; } memcpy(o, t, len); return 0; }
int32_t dbc_kc_get(const char *s, const char *a, uint8_t *o, int32_t cap, int32_t *n) {
  if (strcmp(a, "missing") == 0) return 1;
  if (strcmp(a, "big") == 0) { memset(echo, 'x', 3000); return out(echo, 3000, o, cap, n); }
  int len = snprintf(echo, sizeof echo, "%s|%s", s, a);
  return out(echo, len, o, cap, n);
}
int32_t dbc_kc_delete(const char *s, const char *a) { return strcmp(a, "present") == 0 ? 0 : 1; }
int32_t dbc_kc_list(const char *s, uint8_t *o, int32_t cap, int32_t *n) { return strcmp(s, "empty") == 0 ? out("", 0, o, cap, n) : out("a\\nb\\nc", 5, o, cap, n); }
`

describe('the bun:ffi wrapper over a compiled stand-in', () => {
  const lib = Bun.which('cc') ? compileLibrary(STAND_IN) : null
  test.skipIf(!lib)(`strings and buffers cross the ABI as the header says; failures carry the bridge's message${lib ? '' : ' (skipped: no C compiler)'}`, () => {
    const probe = probeMacosBridge({ platform: 'darwin', candidates: [lib!] })
    if (!probe.available) throw new Error(probe.reason)
    const bridge = probe.bridge
    expect(new TextDecoder().decode(bridge.keychainGet('dbcluster pins /h', 'C02 ÄÖ'))).toBe('dbcluster pins /h|C02 ÄÖ')
    expect(bridge.keychainGet('s', 'missing')).toBeUndefined()
    expect(bridge.keychainGet('s', 'big')).toEqual(new Uint8Array(3000).fill(0x78)) // grown after -2
    expect(bridge.keychainDelete('s', 'present')).toBe(true)
    expect(bridge.keychainDelete('s', 'absent')).toBe(false)
    expect(bridge.keychainList('s')).toEqual(['a', 'b', 'c'])
    expect(bridge.keychainList('empty')).toEqual([])
    expect(() => bridge.keychainSet('s', 'bob', new Uint8Array([1]))).toThrow(
      expect.objectContaining({ code: 'E_MACOS_BRIDGE', message: "writing Keychain item 'bob' failed: SecItemAdd/SecItemUpdate: User interaction is not allowed. (OSStatus -25308)",
        hint: expect.stringContaining('DBCLUSTER_PIN_STORE=file'),
      }),
    )
    expect(bridge.enclaveAvailable()).toBe(false)
    expect(() => bridge.createEnclaveKey()).toThrow('creating a Secure Enclave key failed: this Mac has no Secure Enclave (SecureEnclave.isAvailable is false)')
    // The enclave identity's probe reads that answer; the Keychain pin store refuses an item that is not a pin.
    expect(enclaveProbe({ platform: 'darwin', arch: 'arm64', bridge: () => probe })).toEqual({
      available: false,
      reason: 'Secure Enclave identity unavailable: this Mac reports no Secure Enclave (SecureEnclave.isAvailable is false, as in a virtual machine)',
    })
    expect(() => new KeychainPinStore(bridge, 'svc').get('bob')).toThrow(expect.objectContaining({ code: 'E_PIN_FILE', message: "Keychain item 'bob' of 'svc' is malformed" }))
    expect(() => new KeychainPinStore(bridge, 'svc').set('bad\nserial', { publicKey: 'AA==', keyKind: 'software', source: 'manual', pinnedAt: 1 })).toThrow(expect.objectContaining({ code: 'E_PIN_SERIAL' }))
  })
})

const real = probeMacosBridge()
describe('on this machine', () => {
  test.skipIf(!real.available)(`the built bridge loads and answers${real.available ? '' : ` (skipped: ${real.reason})`}`, () => {
    if (!real.available) return
    expect(typeof real.bridge.enclaveAvailable()).toBe('boolean')
    // An empty service lists nothing rather than failing.
    expect(real.bridge.keychainList(`dbcluster test empty ${crypto.randomUUID()}`)).toEqual([])
  })
})
