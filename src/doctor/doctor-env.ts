/** What the doctor's checks read of the machine and the world: commands, files, memory, the network; tests give their
 * own (checks.ts builds the real one with defaultEnv). Its own file, so the check modules need not import each other. */
import type { MacosBridgeProbe } from '../trust/macos-bridge.ts'
import type { CommandResult } from './run-with-timeout.ts'

export interface DoctorEnv {
  platform: NodeJS.Platform
  run: (cmd: string[]) => Promise<CommandResult>
  keyFile: string
  pinFile: string
  /** DBCLUSTER_PIN_STORE (auto | file | keychain). */
  pinStoreRequest?: string
  /** The macOS bridge, for the Keychain pin store; probed when not given. */
  macosBridge?: () => MacosBridgeProbe
  coordinator?: string
  /** A running head's URL, for the checks across nodes. */
  cluster?: string
  /** Nodes in the cluster (for the bridge-loop check; taken from --cluster when given). */
  nodes?: number
  /** Bytes the plan needs on this machine; the free-memory check SKIPs without it. */
  needBytes?: number
  freeBytes: () => number
  /** Whether the sealed tensor-parallel channel seals in C (libcrypto from OpenSSL 3 loads); given by the command, since
   * the channel lives above this module. */
  nativeTpSealing?: () => boolean
  fetch: typeof fetch
  now: () => number
}
