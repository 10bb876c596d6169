/** `dbcluster rdma-ping`: the cable smoke test — R rounds of all_sum per size on every rank, checked exactly, with
 * latency and bandwidth per size. Transport `link` (our sealed TCP link) works everywhere; jaccl and ring are not built. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { DbcError, UsageError } from '../errors.ts'
import { checkRdmaEnabled, checkRdmaPorts, checkThunderbolt, defaultEnv } from '../doctor/checks.ts'
import { acceptRanks, dialRankZero } from '../rdma-ping/link-ranks.ts'
import { hubAllSum, spokeAllSum } from '../rdma-ping/link-all-sum.ts'
import { parseSizes, pingRounds } from '../rdma-ping/ping-rounds.ts'
import { defaultKeyFile, defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'

function positiveInt(name: string, text: string): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got '${text}'`)
  return n
}

function hostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(text)
  if (!m) throw new UsageError(`--${flag} must be HOST:PORT, got '${text}'`, `e.g. --${flag} 169.254.10.2:47100`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

/** Fails early, with the doctor's fix, when the chosen transport cannot work here. */
async function checkTransport(transport: string): Promise<void> {
  if (transport === 'link') return
  if (transport === 'jaccl') {
    if (process.platform !== 'darwin') throw new DbcError('E_TRANSPORT_UNAVAILABLE', 'jaccl needs macOS 26.2+ with RDMA over Thunderbolt 5; this machine is ' + process.platform, 'use --transport link (works everywhere)')
    const env = defaultEnv({ keyFile: defaultKeyFile(), pinFile: defaultPinFile() })
    for (const r of [await checkRdmaEnabled(env), await checkRdmaPorts(env), await checkThunderbolt(env)]) {
      if (r.status === 'FAIL') throw new DbcError('E_TRANSPORT_UNAVAILABLE', `${r.name}: ${r.detail}`, `${r.fix}; or use --transport link`)
    }
  }
  // The MLX distributed path (mlx-c all_sum through the shim) is not built yet: say so instead of pretending.
  throw new DbcError('E_TRANSPORT_UNAVAILABLE', `transport '${transport}' (MLX distributed) is not built in this version`, 'use --transport link')
}

export default defineCommand({
  meta: { name: 'rdma-ping', description: 'Smoke-test the links between ranks: rounds of all_sum per size, checked exactly, with latency and bandwidth' },
  args: {
    rank: { type: 'string', description: 'This process\'s rank (0 listens, the others dial it)', required: true, valueHint: 'N' },
    'world-size': { type: 'string', description: 'Number of ranks', default: '2', valueHint: 'W' },
    peer: { type: 'string', description: 'Rank 0\'s HOST:PORT (ranks > 0)', valueHint: 'HOST:PORT' },
    listen: { type: 'string', description: 'Where rank 0 listens', default: '0.0.0.0:47100', valueHint: 'HOST:PORT' },
    coordinator: { type: 'string', description: 'Coordinator HOST:PORT for rank discovery (not built yet: use --peer)', valueHint: 'HOST:PORT' },
    transport: { type: 'string', description: 'link (sealed TCP link, works everywhere); jaccl and ring (MLX distributed) are not built yet', default: 'link', valueHint: 'jaccl|ring|link' },
    'rdma-device': { type: 'string', description: 'RDMA device for jaccl (not built yet)', valueHint: 'NAME' },
    rounds: { type: 'string', description: 'Measured rounds per size (after one warm-up)', default: '20', valueHint: 'R' },
    sizes: { type: 'string', description: 'Vector sizes in bytes', default: '4K,256K,4M,64M', valueHint: 'LIST' },
    'timeout-s': { type: 'string', description: 'How long to wait for the other ranks, and for each round', default: '60', valueHint: 'S' },
    json: { type: 'boolean', description: 'Print {rank, world_size, transport, sizes:[…]} as JSON', default: false },
  },
  async run({ args }) {
    const rank = positiveInt('rank', args.rank)
    const worldSize = positiveInt('world-size', args['world-size'])
    const rounds = positiveInt('rounds', args.rounds)
    const timeoutMs = positiveInt('timeout-s', args['timeout-s']) * 1000
    if (worldSize < 2) throw new UsageError('--world-size must be at least 2')
    if (rank >= worldSize) throw new UsageError(`--rank ${rank} is not below --world-size ${worldSize}`)
    if (rounds < 1) throw new UsageError('--rounds must be at least 1')
    const sizes = parseSizes(args.sizes)
    if (!['link', 'ring', 'jaccl'].includes(args.transport)) throw new UsageError(`unknown --transport '${args.transport}'`, 'use link, ring or jaccl')
    await checkTransport(args.transport)
    if (rank > 0 && !args.peer) {
      throw new UsageError('ranks > 0 need --peer HOST:PORT of rank 0', args.coordinator ? 'rank discovery through --coordinator is not built yet' : "rank 0 prints the address to use when it starts")
    }
    const { identity } = loadLocalIdentity(defaultKeyFile(), { create: true })
    const linkOpts = {
      identity,
      serial: machineSerial(),
      pins: openLocalPinStore(defaultPinFile()).store,
      onPeer: (serial: string, fp: string, pinned: boolean) => consola.info(`peer ${serial} key ${fp}${pinned ? ' (pinned)' : ' (not pinned: accepted for test data only)'}`),
    }
    let allSum
    let close: () => void
    if (rank === 0) {
      const at = hostPort(args.listen, 'listen')
      const { links, stop } = await acceptRanks(at.host, at.port, worldSize, timeoutMs, linkOpts, (port) => consola.info(`rank 0 listening on ${at.host}:${port}; start the others with --peer <this host>:${port}`))
      allSum = hubAllSum(links, timeoutMs)
      close = () => (links.forEach((l) => l.close()), stop())
    } else {
      const at = hostPort(args.peer!, 'peer')
      const link = await dialRankZero(at.host, at.port, timeoutMs, linkOpts)
      allSum = spokeAllSum(link, timeoutMs)
      close = () => link.close()
    }
    try {
      const results = await pingRounds(allSum, { rank, worldSize, sizes, rounds, onProgress: (l) => consola.info(l) })
      if (args.json) {
        console.log(JSON.stringify({ rank, world_size: worldSize, transport: args.transport, sizes: results }))
        return
      }
      console.log(`rank ${rank}/${worldSize} over ${args.transport}: ${rounds} rounds per size, every sum exact`)
      console.log('     bytes      min µs   median µs      p99 µs      GB/s')
      for (const r of results) console.log(`${String(r.bytes).padStart(10)}  ${r.latency_us.min.toFixed(1).padStart(10)}  ${r.latency_us.median.toFixed(1).padStart(10)}  ${r.latency_us.p99.toFixed(1).padStart(10)}  ${r.gbps.toFixed(3).padStart(8)}`)
    } finally {
      // Let the last frames leave before closing.
      await Bun.sleep(50)
      close()
    }
  },
})
