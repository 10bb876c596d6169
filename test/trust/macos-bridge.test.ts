/** The macOS bridge's seam, checked on any OS: the header, the Swift exports and the bun:ffi table agree, and the loader
 * refuses a wrong platform, a missing file, a file that is no library, a bridge of another ABI and an incomplete one.
 * On a Mac with the bridge built, it also loads for real. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probe as enclaveProbe } from '../../src/trust/identity-enclave.ts'
import {
  MACOS_BRIDGE_ABI,
  MACOS_SYMBOLS,
  probeMacosBridge,
  type MacosBridgeProbe,
} from '../../src/trust/macos-bridge.ts'
import { KeychainPinStore } from '../../src/trust/pin-store-keychain.ts'
import { compileLibrary, compileStandIn } from '../support/macos-bridge-stand-in.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const reasonOf = (p: MacosBridgeProbe): string => (p.available ? 'available' : p.reason)
const dir = () => mkdtempSync(join(tmpdir(), 'dbc-bridge-'))

/** name → arity, in declaration order, from ffi/macos/dbc_macos.h. */
function headerSymbols(): [string, number][] {
  const text = readFileSync(join(ROOT, 'ffi/macos/dbc_macos.h'), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '')
  return [...text.matchAll(/\b(dbc_\w+)\s*\(([^)]*)\)\s*;/g)].map((m) => [
    m[1]!,
    m[2]!.trim() === 'void' ? 0 : m[2]!.split(',').length,
  ])
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

describe('ABI agreement', () => {
  test('header, Swift @_cdecl exports and the bun:ffi table list the same symbols with the same arity, in header order', () => {
    const header = headerSymbols()
    expect(header.length).toBe(10)
    expect(Object.keys(MACOS_SYMBOLS)).toEqual(header.map(([name]) => name))
    for (const [name, arity] of header)
      expect([name, MACOS_SYMBOLS[name as keyof typeof MACOS_SYMBOLS].args.length as number]).toEqual([name, arity])
    expect(Object.fromEntries(swiftExports())).toEqual(Object.fromEntries(header))
  })

  test('the Swift ABI version is the one the loader expects', () => {
    const m = /let bridgeAbiVersion: Int32 = (\d+)/.exec(readFileSync(join(ROOT, 'ffi/macos/bridge.swift'), 'utf8'))
    expect(Number(m?.[1])).toBe(MACOS_BRIDGE_ABI)
  })
})

describe('loader refusals', () => {
  test('another platform, or no bridge file, says why and how to build it', () => {
    expect(probeMacosBridge({ platform: 'linux' })).toEqual({
      available: false,
      reason: 'the macOS bridge exists only on macOS (this is linux)',
    })
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
  test.skipIf(!cc)(
    `a bridge of another ABI version, or one missing symbols, is refused${cc ? '' : ' (skipped: no C compiler)'}`,
    () => {
      const old = compileLibrary('int dbc_mac_abi_version(void) { return 99; }\n')!
      expect(probeMacosBridge({ platform: 'darwin', candidates: [old] })).toEqual({
        available: false,
        reason: `the macOS bridge ${old} has ABI 99, this build expects ${MACOS_BRIDGE_ABI}`,
      })
      const partial = compileLibrary(`int dbc_mac_abi_version(void) { return ${MACOS_BRIDGE_ABI}; }\n`)!
      expect(reasonOf(probeMacosBridge({ platform: 'darwin', candidates: [partial] }))).toStartWith(
        `cannot load the macOS bridge ${partial}: `,
      )
    },
  )
})

describe('the bun:ffi wrapper over a compiled stand-in', () => {
  const lib = compileStandIn()
  test.skipIf(!lib)(
    `strings and buffers cross the ABI as the header says; failures carry the bridge's message${lib ? '' : ' (skipped: no C compiler)'}`,
    () => {
      const probe = probeMacosBridge({ platform: 'darwin', candidates: [lib!] })
      if (!probe.available) throw new Error(probe.reason)
      const bridge = probe.bridge
      expect(new TextDecoder().decode(bridge.keychainGet('dbcluster pins /h', 'C02 ÄÖ'))).toBe(
        'dbcluster pins /h|C02 ÄÖ',
      )
      expect(bridge.keychainGet('s', 'missing')).toBeUndefined()
      expect(bridge.keychainGet('s', 'big')).toEqual(new Uint8Array(3000).fill(0x78)) // grown after -2
      expect(bridge.keychainDelete('s', 'present')).toBe(true)
      expect(bridge.keychainDelete('s', 'absent')).toBe(false)
      expect(bridge.keychainList('s')).toEqual(['a', 'b', 'c'])
      expect(bridge.keychainList('empty')).toEqual([])
      expect(() => bridge.keychainSet('s', 'bob', new Uint8Array([1]))).toThrow(
        expect.objectContaining({
          code: 'E_MACOS_BRIDGE',
          message:
            "writing Keychain item 'bob' failed: SecItemAdd/SecItemUpdate: User interaction is not allowed. (OSStatus -25308)",
          hint: expect.stringContaining('DBCLUSTER_PIN_STORE=file'),
        }),
      )
      expect(bridge.enclaveAvailable()).toBe(false)
      expect(() => bridge.createEnclaveKey()).toThrow(
        'creating a Secure Enclave key failed: this Mac has no Secure Enclave (SecureEnclave.isAvailable is false)',
      )
      // The enclave identity's probe reads that answer; the Keychain pin store refuses an item that is not a pin.
      expect(enclaveProbe({ platform: 'darwin', arch: 'arm64', bridge: () => probe })).toEqual({
        available: false,
        reason:
          'Secure Enclave identity unavailable: this Mac reports no Secure Enclave (SecureEnclave.isAvailable is false, as in a virtual machine)',
      })
      expect(() => new KeychainPinStore(bridge, 'svc').get('bob')).toThrow(
        expect.objectContaining({ code: 'E_PIN_FILE', message: "Keychain item 'bob' of 'svc' is malformed" }),
      )
      expect(() =>
        new KeychainPinStore(bridge, 'svc').set('bad\nserial', {
          publicKey: 'AA==',
          keyKind: 'software',
          source: 'manual',
          pinnedAt: 1,
        }),
      ).toThrow(expect.objectContaining({ code: 'E_PIN_SERIAL' }))
    },
  )
})

const real = probeMacosBridge()
describe('on this machine', () => {
  test.skipIf(!real.available)(
    `the built bridge loads and answers${real.available ? '' : ` (skipped: ${real.reason})`}`,
    () => {
      if (!real.available) return
      expect(typeof real.bridge.enclaveAvailable()).toBe('boolean')
      // An empty service lists nothing rather than failing.
      expect(real.bridge.keychainList(`dbcluster test empty ${crypto.randomUUID()}`)).toEqual([])
    },
  )
})
