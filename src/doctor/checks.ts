/** The checks `dbcluster doctor` runs. macOS-only checks SKIP elsewhere with the reason; the rest really run on Linux. */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { freemem } from 'node:os'
import { linkLocalInterfaces } from '../discovery/link-local.ts'
import { enclaveKeyFileFor } from '../trust/local-identity.ts'
import { choosePinStore, keychainServiceFor, parsePinStoreRequest } from '../trust/local-pin-store.ts'
import { probeMacosBridge, type MacosBridgeProbe } from '../trust/macos-bridge.ts'
import { osVersion } from '../trust/machine-info.ts'
import { KeychainPinStore } from '../trust/pin-store-keychain.ts'
import { fail, pass, skip, type CheckResult } from './check.ts'
import {
  isThunderbolt5,
  parseIbvDevinfo,
  parseRdmaCtlStatus,
  parseSwVers,
  parseThunderboltPorts,
} from './macos-parsers.ts'
import { runWithTimeout, type CommandResult } from './run-with-timeout.ts'
import type { DoctorEnv } from './doctor-env.ts'

export type { DoctorEnv }
import { checkBridgeLoop, checkCluster, checkRdmaPeers } from './cluster-checks.ts'

export function defaultEnv(partial: Partial<DoctorEnv> & Pick<DoctorEnv, 'keyFile' | 'pinFile'>): DoctorEnv {
  // a head with --api-key answers /health only with it (DBCLUSTER_API_KEY, as `cluster status` reads it)
  const key = process.env.DBCLUSTER_API_KEY
  const keyed: typeof fetch = Object.assign(
    (input: Parameters<typeof fetch>[0], init?: RequestInit) =>
      fetch(
        input,
        key
          ? { ...init, headers: { ...(init?.headers as Record<string, string>), authorization: `Bearer ${key}` } }
          : init,
      ),
    fetch,
  )
  return {
    platform: process.platform,
    run: (cmd) => runWithTimeout(cmd),
    freeBytes: freemem,
    fetch: keyed,
    now: Date.now,
    pinStoreRequest: process.env.DBCLUSTER_PIN_STORE,
    ...partial,
  }
}

const notMac = (name: string, env: DoctorEnv): CheckResult | null =>
  env.platform === 'darwin' ? null : skip(name, `macOS only (this is ${env.platform})`)

export async function checkRdmaEnabled(env: DoctorEnv): Promise<CheckResult> {
  const name = 'RDMA enabled'
  const s = notMac(name, env)
  if (s) return s
  const r = await env.run(['rdma_ctl', 'status'])
  if (!r.ok) return fail(name, r.reason ?? 'rdma_ctl failed', 'RDMA over Thunderbolt needs macOS 26.2 or later')
  const state = parseRdmaCtlStatus(r.stdout)
  if (state === 'enabled') return pass(name, 'rdma_ctl status: enabled')
  return fail(name, `rdma_ctl status: ${state}`, "boot into Recovery, run 'rdma_ctl enable' in Terminal, restart")
}

export async function checkRdmaPorts(env: DoctorEnv): Promise<CheckResult> {
  const name = 'RDMA devices and ports'
  if (env.platform !== 'darwin') {
    const dir = '/sys/class/infiniband'
    const devices = existsSync(dir) ? readdirSync(dir) : []
    return devices.length
      ? pass(name, `/sys/class/infiniband: ${devices.join(', ')}`)
      : skip(name, 'no /sys/class/infiniband devices; use --transport link or ring')
  }
  const r = await env.run(['ibv_devinfo'])
  if (!r.ok)
    return fail(
      name,
      r.reason ?? 'ibv_devinfo failed',
      'enable RDMA first (rdma_ctl) and connect a Thunderbolt 5 cable',
    )
  const ports = parseIbvDevinfo(r.stdout)
  const active = ports.filter((p) => p.state.startsWith('PORT_ACTIVE'))
  if (active.length) return pass(name, `active: ${active.map((p) => `${p.device}:${p.port}`).join(', ')}`)
  return fail(
    name,
    ports.length ? `no active port (${ports.map((p) => `${p.device}:${p.state}`).join(', ')})` : 'no RDMA devices',
    'check the Thunderbolt 5 cable is seated on both machines',
  )
}

export async function checkThunderbolt(env: DoctorEnv): Promise<CheckResult> {
  const name = 'Thunderbolt generation'
  const s = notMac(name, env)
  if (s) return s
  const r = await env.run(['system_profiler', 'SPThunderboltDataType'])
  if (!r.ok)
    return fail(name, r.reason ?? 'system_profiler failed', 'rerun doctor; system_profiler can be slow on first use')
  const ports = parseThunderboltPorts(r.stdout)
  const fast = ports.filter((p) => isThunderbolt5(p.speedGbps))
  if (fast.length)
    return pass(name, `Thunderbolt 5 link on ${fast.map((p) => `${p.name} (${p.speedGbps} Gb/s)`).join(', ')}`)
  return fail(
    name,
    ports.length ? `fastest link ${Math.max(...ports.map((p) => p.speedGbps ?? 0))} Gb/s` : 'no Thunderbolt ports',
    'RDMA needs Thunderbolt 5 on both ends (TB4 cannot do RDMA); use --transport ring or link',
  )
}

export async function checkOsVersion(env: DoctorEnv): Promise<CheckResult> {
  const name = 'OS version'
  if (env.platform !== 'darwin') return pass(name, osVersion())
  const r = await env.run(['sw_vers'])
  const v = r.ok ? parseSwVers(r.stdout) : null
  if (!v) return fail(name, r.reason ?? 'sw_vers printed no ProductVersion', 'run sw_vers by hand to see why')
  const [major, minor] = v.split('.').map(Number)
  if (major! > 26 || (major === 26 && (minor ?? 0) >= 2)) return pass(name, `macOS ${v}`)
  return fail(name, `macOS ${v}`, 'RDMA over Thunderbolt needs macOS 26.2 or later: update in System Settings')
}

export function checkLinkLocal(): CheckResult {
  const name = 'data path interface'
  const ifaces = linkLocalInterfaces()
  if (ifaces.length) return pass(name, ifaces.map((i) => `${i.name} ${i.address}`).join(', '))
  return skip(name, 'no link-local (169.254/16) interface; peers will be reached over the routed network')
}

function privateFileCheck(name: string, path: string, missingFix: string): CheckResult {
  if (!existsSync(path)) return fail(name, `${path} missing`, missingFix)
  const mode = statSync(path).mode & 0o777
  if (mode & 0o077) return fail(name, `${path} mode ${mode.toString(8)}`, `run 'chmod 600 ${path}'`)
  return pass(name, `${path} (mode ${mode.toString(8)})`)
}

export function checkIdentityKey(env: DoctorEnv): CheckResult {
  // A Secure Enclave identity keeps its blob file beside where the software key would be (docs/trust.md).
  const enclaveKeyFile = enclaveKeyFileFor(env.keyFile)
  if (existsSync(enclaveKeyFile)) return privateFileCheck('identity key', enclaveKeyFile, '')
  return privateFileCheck('identity key', env.keyFile, "run 'dbcluster identity show' to create one")
}

const MDA_STEPS =
  "have your MDM send DeviceInformation (DevicePropertiesAttestation) with DeviceAttestationNonce set to the 'MDA nonce' that 'dbcluster identity show' prints, save the returned chain as PEM, and start serve with --mda-chain FILE (docs/trust.md §Hardware trust)"

/** What a coordinator can vouch for with this machine's key, and how to reach `hardware` (never a failure: software trust works). */
export function checkHardwareTrust(env: DoctorEnv): CheckResult {
  const name = 'hardware trust'
  if (existsSync(enclaveKeyFileFor(env.keyFile)))
    return {
      ...skip(
        name,
        'Secure Enclave key: a coordinator gives it hardware trust only with a verified Apple managed device attestation',
      ),
      fix: MDA_STEPS,
    }
  return {
    ...skip(name, 'software key file: software trust at most'),
    fix: `on an Apple Silicon Mac, move ${env.keyFile} away and run 'dbcluster identity init' for a Secure Enclave key (then re-pin it), then ${MDA_STEPS}`,
  }
}

export function checkPins(env: DoctorEnv): CheckResult {
  const name = 'pinned keys'
  // The same choice `openLocalPinStore` makes: the Keychain on macOS with the bridge, else the pin file (docs/trust.md).
  const bridge = (env.macosBridge ?? probeMacosBridge)()
  try {
    const choice = choosePinStore(parsePinStoreRequest(env.pinStoreRequest), bridge)
    if (choice.kind === 'keychain' && bridge.available) {
      const service = keychainServiceFor(env.pinFile)
      const count = Object.keys(new KeychainPinStore(bridge.bridge, service).list()).length
      const pending = existsSync(env.pinFile) ? `; ${env.pinFile} is imported on the next start` : ''
      return pass(name, `Keychain service '${service}': ${count} pin${count === 1 ? '' : 's'}${pending}`)
    }
  } catch (error) {
    return fail(name, (error as Error).message, (error as { hint?: string }).hint ?? 're-pin through the coordinator')
  }
  if (!existsSync(env.pinFile))
    return skip(name, `${env.pinFile} not created yet; peers are pinned on first contact through the coordinator`)
  return privateFileCheck(name, env.pinFile, '')
}

export function checkMemory(env: DoctorEnv): CheckResult {
  const name = 'free memory'
  const free = env.freeBytes()
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`
  if (env.needBytes === undefined) return skip(name, `${gib(free)} free; pass --need-gib to compare against a plan`)
  if (free >= env.needBytes) return pass(name, `${gib(free)} free, plan needs ${gib(env.needBytes)}`)
  return fail(
    name,
    `${gib(free)} free, plan needs ${gib(env.needBytes)}`,
    'close other programs, or add a node so each holds fewer layers',
  )
}

/** Sealed tensor parallel seals every exchange in C with libcrypto where OpenSSL 3 is installed; without it the same
 * frames are sealed in TypeScript, which works but costs more per exchange (56 of them per step on a 28-layer model). */
export function checkTpSealing(env: DoctorEnv): CheckResult {
  const name = 'tensor-parallel sealing'
  if (!env.nativeTpSealing) return skip(name, 'not probed')
  if (env.nativeTpSealing())
    return pass(name, 'AES-256-GCM from libcrypto (OpenSSL 3): serve --tp seals its exchanges in C')
  const install =
    env.platform === 'darwin'
      ? "run 'brew install openssl@3'"
      : 'install OpenSSL 3 (Debian/Ubuntu: apt install libssl3)'
  return skip(
    name,
    `libcrypto (OpenSSL 3) not found: serve --tp seals its exchanges in TypeScript, slower; for the C path ${install}`,
  )
}

/** Reachability and clock skew in one request: the coordinator's /health answer and its Date header. */
export async function checkCoordinator(env: DoctorEnv): Promise<CheckResult[]> {
  if (!env.coordinator)
    return [skip('coordinator reachable', 'no --coordinator given'), skip('clock skew', 'no --coordinator given')]
  const url = new URL('/health', env.coordinator.includes('://') ? env.coordinator : `http://${env.coordinator}`)
  const sent = env.now()
  let res: Response
  try {
    res = await env.fetch(url, { signal: AbortSignal.timeout(3000) })
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e)
    return [
      fail(
        'coordinator reachable',
        `${url.origin}: ${why}`,
        `start it with 'dbcluster coordinator' or fix --coordinator`,
      ),
      skip('clock skew', 'coordinator unreachable'),
    ]
  }
  const received = env.now()
  const reach = res.ok
    ? pass('coordinator reachable', `${url.origin} answered ${res.status}`)
    : fail(
        'coordinator reachable',
        `${url.origin} answered ${res.status}`,
        'check the URL points at a dbcluster coordinator',
      )
  const date = res.headers.get('date')
  if (!date) return [reach, skip('clock skew', 'the coordinator sent no Date header')]
  // Date has one-second resolution: compare against the midpoint and allow the rounding.
  const skewMs = Date.parse(date) - (sent + received) / 2
  const limitMs = 5000
  const skew =
    Math.abs(skewMs) <= limitMs + 1000
      ? pass('clock skew', `${(skewMs / 1000).toFixed(1)} s against the coordinator`)
      : fail(
          'clock skew',
          `${(skewMs / 1000).toFixed(1)} s against the coordinator`,
          'enable network time (timedatectl set-ntp true, or System Settings > Date & Time)',
        )
  return [reach, skew]
}

export async function runDoctor(env: DoctorEnv): Promise<CheckResult[]> {
  return [
    await checkOsVersion(env),
    await checkRdmaEnabled(env),
    await checkRdmaPorts(env),
    await checkThunderbolt(env),
    checkLinkLocal(),
    checkIdentityKey(env),
    checkHardwareTrust(env),
    checkPins(env),
    checkMemory(env),
    checkTpSealing(env),
    ...(await checkCoordinator(env)),
    ...(await checkCluster(env)),
    await checkBridgeLoop(env, env.nodes ?? (await clusterSize(env))),
    await checkRdmaPeers(env),
  ]
}

async function clusterSize(env: DoctorEnv): Promise<number | undefined> {
  if (!env.cluster) return undefined
  try {
    const health = (await (
      await env.fetch(new URL('/health', env.cluster), { signal: AbortSignal.timeout(3000) })
    ).json()) as { nodes?: number }
    return health.nodes
  } catch {
    return undefined
  }
}
