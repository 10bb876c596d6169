/** The macOS bridge over bun:ffi: ffi/macos/dbc_macos.h, built from Swift into build/libdbc_macos.dylib
 * (scripts/build-macos-bridge.sh), giving Secure Enclave keys and Keychain items. It is the one bun:ffi import outside
 * src/tensor/native.ts: trust sits below tensor in the dependency order, and the bridge is a separate, macOS-only
 * library. Where it is missing, probeMacosBridge() says why and callers fall back to the software key and pin file. */
import { dlopen, FFIType } from 'bun:ffi'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { TrustError } from './errors.ts'

export const MACOS_BRIDGE_FILE = 'libdbc_macos.dylib'
/** Must equal bridgeAbiVersion in ffi/macos/bridge.swift. */
export const MACOS_BRIDGE_ABI = 1
const REBUILD = "rebuild it with 'bash scripts/build-macos-bridge.sh' (macOS, Xcode command line tools)"
const KEYCHAIN_HINT =
  'unlock the login keychain (security unlock-keychain), or set DBCLUSTER_PIN_STORE=file to keep pins in the 0600 file'

const { ptr: P, i32, i64 } = FFIType

/** ffi/macos/dbc_macos.h, in order. test/tensor/native-abi.test.ts checks it against the header, test/trust/macos-bridge.test.ts against the Swift exports. */
export const MACOS_SYMBOLS = {
  dbc_mac_abi_version: { args: [], returns: i32 },
  dbc_mac_last_error: { args: [], returns: FFIType.cstring },
  dbc_se_available: { args: [], returns: i32 },
  dbc_se_create: { args: [P, i32, P], returns: i32 },
  dbc_se_public_key: { args: [P, i32, P], returns: i32 },
  dbc_se_sign: { args: [P, i32, P, i64, P], returns: i32 },
  dbc_kc_set: { args: [P, P, P, i32], returns: i32 },
  dbc_kc_get: { args: [P, P, P, i32, P], returns: i32 },
  dbc_kc_delete: { args: [P, P], returns: i32 },
  dbc_kc_list: { args: [P, P, i32, P], returns: i32 },
} as const

type MacosSymbols = ReturnType<typeof dlopen<typeof MACOS_SYMBOLS>>['symbols']

/** Where the bridge may live: DBCLUSTER_MACOS_BRIDGE, beside the executable (a release), or the source tree's build/. */
export function macosBridgeCandidates(env: Record<string, string | undefined> = process.env): string[] {
  return [
    env.DBCLUSTER_MACOS_BRIDGE,
    join(dirname(process.execPath), MACOS_BRIDGE_FILE),
    // not inside a compiled binary, whose modules live in Bun's embedded file system
    import.meta.dir.includes('$bunfs') ? undefined : join(import.meta.dir, '..', '..', 'build', MACOS_BRIDGE_FILE),
  ].filter((p): p is string => Boolean(p))
}

const cstring = (text: string) => Buffer.from(`${text}\0`, 'utf8')

/** Typed calls into the bridge; a negative return code throws E_MACOS_BRIDGE with the bridge's own message. */
export class MacosBridge {
  constructor(
    private readonly lib: MacosSymbols,
    readonly path: string,
  ) {}

  #check(rc: number, what: string, hint?: string): number {
    if (rc < 0)
      throw new TrustError('E_MACOS_BRIDGE', `${what} failed: ${this.lib.dbc_mac_last_error() ?? `code ${rc}`}`, hint)
    return rc
  }

  /** Calls `fill(buffer, capacity, lengthOut)`; grows once when the bridge answers -2 (too small). 1 = not found. */
  #readSized(
    what: string,
    initial: number,
    fill: (out: Uint8Array, capacity: number, length: Int32Array) => number,
  ): Uint8Array | undefined {
    const length = new Int32Array(1)
    let out = new Uint8Array(initial)
    let rc = fill(out, out.length, length)
    if (rc === -2) {
      out = new Uint8Array(length[0]!)
      rc = fill(out, out.length, length)
    }
    if (this.#check(rc, what, KEYCHAIN_HINT) === 1) return undefined
    return out.slice(0, length[0]!)
  }

  enclaveAvailable(): boolean {
    return this.lib.dbc_se_available() === 1
  }

  /** A new key inside the Secure Enclave; returns its device-bound blob (not secret elsewhere, useless on another Mac). */
  createEnclaveKey(): Uint8Array {
    const length = new Int32Array(1)
    // A blob is a few hundred bytes; never retry creation (that would make a second key).
    const out = new Uint8Array(8192)
    this.#check(this.lib.dbc_se_create(out, out.length, length), 'creating a Secure Enclave key')
    return out.slice(0, length[0]!)
  }

  /** X9.63 public key (65 bytes, 04‖X‖Y) of the key behind `blob`. */
  enclavePublicKey(blob: Uint8Array): Uint8Array {
    const out = new Uint8Array(65)
    this.#check(this.lib.dbc_se_public_key(blob, blob.length, out), 'opening the Secure Enclave key')
    return out
  }

  /** ECDSA-P256 over SHA-256(message), 64 bytes r‖s. */
  enclaveSign(blob: Uint8Array, message: Uint8Array): Uint8Array {
    const out = new Uint8Array(64)
    this.#check(this.lib.dbc_se_sign(blob, blob.length, message, message.length, out), 'Secure Enclave signing')
    return out
  }

  keychainSet(service: string, account: string, data: Uint8Array): void {
    this.#check(
      this.lib.dbc_kc_set(cstring(service), cstring(account), data, data.length),
      `writing Keychain item '${account}'`,
      KEYCHAIN_HINT,
    )
  }

  keychainGet(service: string, account: string): Uint8Array | undefined {
    return this.#readSized(`reading Keychain item '${account}'`, 1024, (out, capacity, length) =>
      this.lib.dbc_kc_get(cstring(service), cstring(account), out, capacity, length),
    )
  }

  keychainDelete(service: string, account: string): boolean {
    return (
      this.#check(
        this.lib.dbc_kc_delete(cstring(service), cstring(account)),
        `deleting Keychain item '${account}'`,
        KEYCHAIN_HINT,
      ) === 0
    )
  }

  keychainList(service: string): string[] {
    const bytes = this.#readSized(`listing Keychain items of '${service}'`, 4096, (out, capacity, length) =>
      this.lib.dbc_kc_list(cstring(service), out, capacity, length),
    )
    const text = new TextDecoder().decode(bytes)
    return text ? text.split('\n') : []
  }
}

/** Opens the library at `path`: first its ABI version alone (so an old bridge gets the version message, not a missing
 * symbol), then the whole table. Throws E_MACOS_BRIDGE saying what is wrong. */
export function loadMacosBridge(path: string): MacosBridge {
  let version: number
  try {
    const probe = dlopen(path, { dbc_mac_abi_version: MACOS_SYMBOLS.dbc_mac_abi_version })
    version = probe.symbols.dbc_mac_abi_version()
    probe.close()
  } catch (error) {
    throw new TrustError('E_MACOS_BRIDGE', `cannot load the macOS bridge ${path}: ${(error as Error).message}`, REBUILD)
  }
  if (version !== MACOS_BRIDGE_ABI) {
    throw new TrustError(
      'E_MACOS_BRIDGE',
      `the macOS bridge ${path} has ABI ${version}, this build expects ${MACOS_BRIDGE_ABI}`,
      REBUILD,
    )
  }
  try {
    return new MacosBridge(dlopen(path, MACOS_SYMBOLS).symbols, path)
  } catch (error) {
    throw new TrustError('E_MACOS_BRIDGE', `cannot load the macOS bridge ${path}: ${(error as Error).message}`, REBUILD)
  }
}

export type MacosBridgeProbe = { available: true; bridge: MacosBridge } | { available: false; reason: string }

const opened = new Map<string, MacosBridge>()

/** Finds and opens the bridge (once per path). `platform` and `candidates` are injectable so every refusal is testable. */
export function probeMacosBridge(
  options: { platform?: NodeJS.Platform; candidates?: string[] } = {},
): MacosBridgeProbe {
  const platform = options.platform ?? process.platform
  if (platform !== 'darwin')
    return { available: false, reason: `the macOS bridge exists only on macOS (this is ${platform})` }
  const candidates = options.candidates ?? macosBridgeCandidates()
  const path = candidates.find((p) => existsSync(p))
  if (!path)
    return {
      available: false,
      reason: `${MACOS_BRIDGE_FILE} not found (looked at ${candidates.join(', ')}); build it with 'bash scripts/build-macos-bridge.sh'`,
    }
  try {
    const bridge = opened.get(path) ?? loadMacosBridge(path)
    opened.set(path, bridge)
    return { available: true, bridge }
  } catch (error) {
    return { available: false, reason: (error as Error).message }
  }
}
