/** What the commands that run over MLX distributed share (rdma-ping --transport ring|jaccl, generate --tp): flags to
 * addresses, the transport probes, and joining the group after the ranks met over the sealed link. */
import { consola } from 'consola'
import { chooseTransport } from './choose-transport.ts'
import type { Backend } from '../tensor/backend.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'
import { DbcError, UsageError } from '../errors.ts'
import { checkRdmaEnabled, checkRdmaPorts, checkThunderbolt, defaultEnv } from '../doctor/checks.ts'
import type { TransportProbes } from './choose-transport.ts'
import type { RankLinkOptions } from './rank-meeting.ts'
import { parseDevices, writeMlxEnvironment, type MlxLayout } from './mlx-layout.ts'
import { mlxRendezvous } from './mlx-rendezvous.ts'
import { MlxGroup, probeMlxTransport, setMlxEnvironment } from './mlx-group.ts'
import { defaultKeyFile, defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { machineSerial, rdmaProbes } from '../trust/machine-info.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { decideRdma } from '../trust/rdma-gate.ts'

export function hostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(text)
  if (!m) throw new UsageError(`--${flag} must be HOST:PORT, got '${text}'`, `e.g. --${flag} 169.254.10.2:47100`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

export const transportProbes = (): TransportProbes => ({
  platform: process.platform,
  rdmaGate: () => decideRdma(true, rdmaProbes()),
  mlx: probeMlxTransport,
})

/** Fails early, with the doctor's fix, when jaccl's RDMA path is not ready (the gate passed, but a port may be down). */
export async function doctorJaccl(): Promise<void> {
  const env = defaultEnv({ keyFile: defaultKeyFile(), pinFile: defaultPinFile() })
  for (const r of [await checkRdmaEnabled(env), await checkRdmaPorts(env), await checkThunderbolt(env)]) {
    if (r.status === 'FAIL')
      throw new DbcError(
        'E_TRANSPORT_UNAVAILABLE',
        `${r.name}: ${r.detail}`,
        `${r.fix}; or use --transport ring or link`,
      )
  }
}

/** This machine's identity for the rendezvous link; unpinned peers are accepted and their fingerprints printed. */
export function rankLinkOptions(
  unpinnedNote: string,
  log: (line: string) => void = (l) => consola.info(l),
): RankLinkOptions {
  const { identity } = loadLocalIdentity(defaultKeyFile(), { create: true })
  return {
    identity,
    serial: machineSerial(),
    pins: openLocalPinStore(defaultPinFile()).store,
    onPeer: (serial, fp, pinned) =>
      log(`peer ${serial} key ${fp}${pinned ? ' (pinned)' : ` (not pinned: ${unpinnedNote})`}`),
  }
}

function describeLayout(layout: MlxLayout): string {
  if (layout.transport === 'ring') return `hostfile ${JSON.stringify(layout.hostfile)}`
  return `coordinator ${layout.coordinator}, devices ${JSON.stringify(layout.devices)}`
}

export interface JoinOptions {
  rank: number
  worldSize: number
  timeoutMs: number
  link: RankLinkOptions
  /** rank 0's HOST:PORT to listen on, and the others' HOST:PORT of rank 0 */
  listen: string
  peer?: string
  /** --rdma-device (jaccl) */
  devices?: string
  /** where progress lines go (default: consola.info; a --json command sends them to stderr) */
  log?: (line: string) => void
}

/** Meets the other ranks over the sealed link, writes MLX's files and C environment, and joins the MLX group. */
export async function joinMlxGroup(transport: 'ring' | 'jaccl', o: JoinOptions): Promise<MlxGroup> {
  const log = o.log ?? ((line: string) => consola.info(line))
  if (o.rank > 0 && !o.peer)
    throw new UsageError('ranks > 0 need --peer HOST:PORT of rank 0', 'rank 0 prints the address to use when it starts')
  const layout = await mlxRendezvous({
    transport,
    rank: o.rank,
    worldSize: o.worldSize,
    timeoutMs: o.timeoutMs,
    link: o.link,
    listen: o.rank === 0 ? hostPort(o.listen, 'listen') : undefined,
    peer: o.rank > 0 ? hostPort(o.peer!, 'peer') : undefined,
    devices: transport === 'jaccl' ? parseDevices(o.devices, o.rank, o.worldSize) : undefined,
    onListening: (port) =>
      log(
        `rank 0 listening on ${o.listen.replace(/:\d+$/, '')}:${port}; start the others with --peer <this host>:${port}`,
      ),
  })
  log(`MLX ${transport}: ${describeLayout(layout)}`)
  const { env, cleanup } = writeMlxEnvironment(layout, o.rank)
  setMlxEnvironment(env)
  let group: MlxGroup
  try {
    group = MlxGroup.join(transport, o.timeoutMs)
  } finally {
    cleanup() // MLX read the files while it joined
  }
  if (group.rank !== o.rank || group.size !== o.worldSize) {
    group.close()
    throw new DbcError(
      'E_MLX_DISTRIBUTED',
      `MLX formed rank ${group.rank} of ${group.size}, expected ${o.rank} of ${o.worldSize}`,
      'check that no MLX_* variables are set in the environment',
    )
  }
  return group
}

/** Said on every rank before tensor parallel starts: MLX's transports do not go through the sealed link. */
export const TP_NOT_ENCRYPTED =
  'tensor parallel sends activations between ranks through MLX distributed, which is NOT encrypted (unlike the sealed link of pipeline parallel): use it only on a cable or network you trust'

/** The flags of a command that runs tensor parallel (generate --tp; serve --tp can take the same). */
export interface TensorParallelFlags {
  size: number
  rank: number
  /** auto | ring | jaccl */
  transport: string
  listen: string
  peer?: string
  rdmaDevice?: string
  timeoutMs: number
  log?: (line: string) => void
}

/** Picks the MLX transport, warns that it is not encrypted, meets the other ranks and joins the group; the returned
 * seam goes to ModelStage.load({ tp }), and the group drives TensorParallelPipeline (rank 0) or followTensorParallel. */
export async function startTensorParallel(
  f: TensorParallelFlags,
  backend: Backend,
): Promise<{ group: MlxGroup; tp: TensorParallel }> {
  const log = f.log ?? ((line: string) => consola.info(line))
  if (!['auto', 'ring', 'jaccl'].includes(f.transport))
    throw new UsageError(`unknown --transport '${f.transport}'`, 'tensor parallel runs over auto, jaccl or ring')
  const chosen = chooseTransport(f.transport as 'auto' | 'ring' | 'jaccl', transportProbes())
  if (chosen.transport === 'link')
    throw new UsageError(
      `tensor parallel needs MLX distributed: ${chosen.reason}`,
      'install mlx-c and build the glue, or use pipeline parallel (serve --peers)',
    )
  if (chosen.transport === 'jaccl') await doctorJaccl()
  consola.warn(TP_NOT_ENCRYPTED)
  log(`tensor parallel rank ${f.rank} of ${f.size} over ${chosen.reason}`)
  const group = await joinMlxGroup(chosen.transport, {
    rank: f.rank,
    worldSize: f.size,
    timeoutMs: f.timeoutMs,
    link: rankLinkOptions('accepted: only the meeting runs over this link', log),
    listen: f.listen,
    peer: f.peer,
    devices: f.rdmaDevice,
    log,
  })
  // a rank that dies must not leave the others blocked in an all_sum (no event loop runs there to notice)
  const rank0Host = f.rank === 0 ? '127.0.0.1' : hostPort(f.peer!, 'peer').host
  group.armWatchdog(
    rank0Host,
    `tensor parallel: another rank of the group went away (its process ended); rank ${f.rank} stops — restart every rank`,
  )
  return { group, tp: group.tensorParallel(backend) }
}
