/** `dbcluster rdma-ping`: the cable smoke test — R rounds of all_sum per size on every rank, checked exactly, with
 * latency and bandwidth per size. Transports: `link` (our sealed TCP link, everywhere), `ring` and `jaccl` (MLX
 * distributed over TCP or Thunderbolt RDMA; the ranks meet over the link first and rank 0 hands out MLX's layout). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import { positiveInt } from './number-list.ts'
import { chooseTransport, type PingTransport } from '../tensor-parallel/choose-transport.ts'
import { acceptRanks, dialRankZero } from '../tensor-parallel/rank-meeting.ts'
import { hubAllSum, spokeAllSum, type AllSum } from '../rdma-ping/link-all-sum.ts'
import { parseSizes, pingRounds } from '../rdma-ping/ping-rounds.ts'
import {
  doctorJaccl,
  hostPort,
  joinMlxGroup,
  rankLinkOptions,
  transportProbes,
  type JoinOptions,
} from '../tensor-parallel/start-mlx.ts'

/** A rank: 0 or more (the others are positive: number-list's positiveInt). */
function nonNegativeInt(name: string, text: string): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got '${text}'`)
  return n
}

/** ring/jaccl: all_sum through the MLX group (the data is reused across rounds, and MLX sums in place). */
async function mlxAllSum(transport: 'ring' | 'jaccl', o: JoinOptions): Promise<{ allSum: AllSum; close: () => void }> {
  const group = await joinMlxGroup(transport, o)
  return { allSum: async (data) => group.allSumHost(data.slice()), close: () => group.close() }
}

export default defineCommand({
  meta: {
    name: 'rdma-ping',
    description:
      'Smoke-test the links between ranks: rounds of all_sum per size, checked exactly, with latency and bandwidth',
  },
  args: {
    rank: {
      type: 'string',
      description: "This process's rank (0 listens, the others dial it)",
      required: true,
      valueHint: 'N',
    },
    'world-size': { type: 'string', description: 'Number of ranks', default: '2', valueHint: 'W' },
    peer: { type: 'string', description: "Rank 0's HOST:PORT (ranks > 0)", valueHint: 'HOST:PORT' },
    listen: {
      type: 'string',
      description: 'Where rank 0 listens (default 0.0.0.0:47100, or the port of --coordinator)',
      valueHint: 'HOST:PORT',
    },
    coordinator: {
      type: 'string',
      description:
        "Rank 0's HOST:PORT, the same on every rank: rank 0 listens on its port, the others dial it (instead of --listen/--peer)",
      valueHint: 'HOST:PORT',
    },
    transport: {
      type: 'string',
      description:
        'jaccl (MLX over Thunderbolt RDMA, macOS), ring (MLX over TCP), link (sealed TCP link, no MLX needed); auto: jaccl where the RDMA gate passes, else ring where MLX is installed, else link',
      default: 'auto',
      valueHint: 'auto|jaccl|ring|link',
    },
    'rdma-device': {
      type: 'string',
      description: "jaccl: this rank's RDMA device (2 ranks), or one per rank in rank order with - for this rank",
      valueHint: 'NAME|LIST',
    },
    rounds: {
      type: 'string',
      description: 'Measured rounds per size (after one warm-up)',
      default: '20',
      valueHint: 'R',
    },
    sizes: { type: 'string', description: 'Vector sizes in bytes', default: '4K,256K,4M,64M', valueHint: 'LIST' },
    'timeout-s': {
      type: 'string',
      description: 'How long to wait for the other ranks, and for each round',
      default: '60',
      valueHint: 'S',
    },
    json: { type: 'boolean', description: 'Print {rank, world_size, transport, sizes:[…]} as JSON', default: false },
  },
  async run({ args }) {
    const rank = nonNegativeInt('rank', args.rank)
    const worldSize = positiveInt(args['world-size'], 'world-size')
    const rounds = positiveInt(args.rounds, 'rounds')
    const timeoutMs = positiveInt(args['timeout-s'], 'timeout-s') * 1000
    if (worldSize < 2) throw new UsageError('--world-size must be at least 2')
    if (rank >= worldSize) throw new UsageError(`--rank ${rank} is not below --world-size ${worldSize}`)
    if (rounds < 1) throw new UsageError('--rounds must be at least 1')
    const sizes = parseSizes(args.sizes)
    if (!['auto', 'link', 'ring', 'jaccl'].includes(args.transport))
      throw new UsageError(`unknown --transport '${args.transport}'`, 'use auto, jaccl, ring or link')
    const { transport, reason } = chooseTransport(args.transport as PingTransport | 'auto', transportProbes())
    if (transport === 'jaccl') await doctorJaccl()
    consola.info(`transport: ${reason}`)
    // --coordinator: one address for every rank's command line (rank 0 listens on its port on every interface)
    const coordinator = args.coordinator === undefined ? undefined : hostPort(args.coordinator, 'coordinator')
    const listen = args.listen ?? (coordinator ? `0.0.0.0:${coordinator.port}` : '0.0.0.0:47100')
    const peer = args.peer ?? args.coordinator
    if (rank > 0 && !peer)
      throw new UsageError(
        'ranks > 0 need --peer HOST:PORT (or --coordinator HOST:PORT) of rank 0',
        'rank 0 prints the address to use when it starts',
      )
    const linkOpts = rankLinkOptions('accepted for test data only')
    let allSum: AllSum
    let close: () => void
    if (transport !== 'link') {
      ;({ allSum, close } = await mlxAllSum(transport, {
        rank,
        worldSize,
        timeoutMs,
        link: linkOpts,
        listen,
        peer,
        devices: args['rdma-device'],
      }))
    } else if (rank === 0) {
      const at = hostPort(listen, 'listen')
      const { links, stop } = await acceptRanks(at.host, at.port, worldSize, timeoutMs, linkOpts, (port) =>
        consola.info(`rank 0 listening on ${at.host}:${port}; start the others with --peer <this host>:${port}`),
      )
      allSum = hubAllSum(links, timeoutMs)
      close = () => (links.forEach((l) => l.close()), stop())
    } else {
      const at = hostPort(peer!, 'peer')
      const link = await dialRankZero(at.host, at.port, timeoutMs, linkOpts)
      allSum = spokeAllSum(link, timeoutMs)
      close = () => link.close()
    }
    try {
      const results = await pingRounds(allSum, { rank, worldSize, sizes, rounds, onProgress: (l) => consola.info(l) })
      if (args.json) {
        console.log(JSON.stringify({ rank, world_size: worldSize, transport, sizes: results }))
        return
      }
      console.log(`rank ${rank}/${worldSize} over ${transport}: ${rounds} rounds per size, every sum exact`)
      console.log('     bytes      min µs   median µs      p99 µs      GB/s')
      for (const r of results)
        console.log(
          `${String(r.bytes).padStart(10)}  ${r.latency_us.min.toFixed(1).padStart(10)}  ${r.latency_us.median.toFixed(1).padStart(10)}  ${r.latency_us.p99.toFixed(1).padStart(10)}  ${r.gbps.toFixed(3).padStart(8)}`,
        )
    } finally {
      // Let the last frames leave before closing.
      await Bun.sleep(50)
      close()
    }
  },
})
