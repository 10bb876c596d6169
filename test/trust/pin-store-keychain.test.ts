/** The Keychain pin store passes the same conformance suite as the pin file, on a Mac with the bridge built (the macOS
 * workflow); elsewhere it reports skipped with the reason. Each run uses its own Keychain service and removes it after. */
import { KeychainPinStore } from '../../src/trust/pin-store-keychain.ts'
import { probeMacosBridge } from '../../src/trust/macos-bridge.ts'
import { runPinStoreSuite } from './pin-store.suite.ts'

const probe = probeMacosBridge()
const bridge = probe.available ? probe.bridge : undefined
const services: string[] = []

runPinStoreSuite(
  'macOS Keychain',
  {
    create: () => {
      const service = `dbcluster test pins ${crypto.randomUUID()}`
      services.push(service)
      return new KeychainPinStore(bridge!, service)
    },
    reopen: (store) => new KeychainPinStore(bridge!, (store as KeychainPinStore).service),
    corrupt: (store, serial) =>
      bridge!.keychainSet((store as KeychainPinStore).service, serial, new TextEncoder().encode('{"publicKey": 7}')),
    cleanup: () => {
      for (const service of services)
        for (const account of bridge?.keychainList(service) ?? []) bridge!.keychainDelete(service, account)
    },
  },
  probe.available ? undefined : probe.reason,
)
