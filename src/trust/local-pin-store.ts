/** This machine's pin store: the Keychain on macOS where the bridge loads, else the 0600 pin file. DBCLUSTER_PIN_STORE
 * (auto | file | keychain) overrides, e.g. `file` on a headless Mac whose login keychain is locked. */
import { existsSync, renameSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { UsageError } from '../errors.ts'
import { probeMacosBridge, type MacosBridgeProbe } from './macos-bridge.ts'
import { KeychainPinStore } from './pin-store-keychain.ts'
import { FilePinStore, type PinStore } from './pinned-keys.ts'

export type PinStoreRequest = 'auto' | 'file' | 'keychain'
export type PinStoreChoice = { kind: 'keychain' } | { kind: 'file'; why: string }

export function parsePinStoreRequest(value: string | undefined): PinStoreRequest {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto'
  if (v === 'auto' || v === 'file' || v === 'keychain') return v
  throw new UsageError(
    `DBCLUSTER_PIN_STORE must be auto, file or keychain, not '${value}'`,
    'unset it to let dbcluster choose (Keychain on macOS, the pin file elsewhere)',
  )
}

/** Pure choice, so each branch is tested on any OS. */
export function choosePinStore(
  request: PinStoreRequest,
  bridge: { available: true } | { available: false; reason: string },
): PinStoreChoice {
  if (request === 'file') return { kind: 'file', why: 'DBCLUSTER_PIN_STORE=file' }
  if (bridge.available) return { kind: 'keychain' }
  if (request === 'keychain')
    throw new UsageError(
      `DBCLUSTER_PIN_STORE=keychain, but the Keychain cannot be used: ${bridge.reason}`,
      'unset DBCLUSTER_PIN_STORE to use the pin file',
    )
  return { kind: 'file', why: bridge.reason }
}

/** Keychain pins are namespaced by state dir, as pin files are, so two DBCLUSTER_HOMEs on one Mac stay apart. */
export const keychainServiceFor = (pinFile: string): string => `dbcluster pins ${resolve(dirname(pinFile))}`

/** Copies pins the target lacks (a pin file left from before the Keychain store); returns the serials copied. */
export function importPins(from: PinStore, to: PinStore): string[] {
  const copied: string[] = []
  for (const [serial, pin] of Object.entries(from.list())) {
    if (to.get(serial)) continue
    to.set(serial, pin)
    copied.push(serial)
  }
  return copied
}

export interface LocalPinStore {
  store: PinStore
  /** Where pins live, for messages: the pin file path or the Keychain service. */
  location: string
  choice: PinStoreChoice
}

export function openLocalPinStore(
  pinFile: string,
  options: { request?: string; bridge?: () => MacosBridgeProbe } = {},
): LocalPinStore {
  const probe = (options.bridge ?? probeMacosBridge)()
  const choice = choosePinStore(parsePinStoreRequest(options.request ?? process.env.DBCLUSTER_PIN_STORE), probe)
  if (choice.kind === 'file' || !probe.available) return { store: new FilePinStore(pinFile), location: pinFile, choice }
  const service = keychainServiceFor(pinFile)
  const store = new KeychainPinStore(probe.bridge, service)
  if (existsSync(pinFile)) {
    // One-time move: the file's pins join the Keychain, and the file is renamed so a later delete is not undone.
    importPins(new FilePinStore(pinFile), store)
    renameSync(pinFile, `${pinFile}.imported-to-keychain`)
  }
  return { store, location: `Keychain service '${service}'`, choice }
}
