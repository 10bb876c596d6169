/** `dbcluster rdma-ping`: the cable smoke test — R rounds of all_sum per size on every rank, checked exactly, with
 * latency and bandwidth per size and a verdict on the link (docs/rdma-ping.md). Transports: `link` (our sealed TCP
 * link, everywhere), `ring` and `jaccl` (MLX distributed over TCP or Thunderbolt RDMA; the ranks meet over the link
 * first and rank 0 hands out MLX's layout). Only the report goes to stdout; logs and progress go to stderr. */
import { defineCommand, type ArgsDef, type ParsedArgs } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import { positiveInt } from './number-list.ts'
import { chooseTransport, type PingTransport } from '../tensor-parallel/choose-transport.ts'
import { acceptRanks, dialRankZero } from '../tensor-parallel/rank-meeting.ts'
import { hubAllSum, hubFinish, spokeAllSum, spokeFinish, type AllSum } from '../rdma-ping/link-all-sum.ts'
import { pingRounds } from '../rdma-ping/ping-rounds.ts'
import { judgeLink } from '../rdma-ping/link-verdict.ts'
import { formatBytes, formatLatency, reportLines, type PingReport } from '../rdma-ping/ping-report.ts'
import { resolvePingPlan } from '../rdma-ping/presets.ts'
import { gbps } from '../rdma-ping/round-stats.ts'
import { progressLine } from './progress-line.ts'
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

const WARMUP_ROUNDS = 1
/** tcp-link.ts's default maxFrameBytes: a larger payload is refused by send(). */
const LINK_MAX_VECTOR_BYTES = 256 * 1024 * 1024

const pingArgs = {
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
  preset: {
    type: 'string',
    description:
      "Rounds and sizes after the seed's make rdma-quick|rdma-verbose|rdma-stress: quick = 5 rounds of 4K,256K (a smoke test: no verdict without 64M); verbose = 20 rounds of 4K,256K,4M,64M, every round printed; stress = 100 rounds of 4M,64M,256M, every round printed. --rounds, --sizes and --per-round override a preset's value",
    valueHint: 'quick|verbose|stress',
  },
  rounds: {
    type: 'string',
    description: "Measured rounds per size, after one warm-up round (default 20, or the preset's)",
    valueHint: 'R',
  },
  sizes: {
    type: 'string',
    description:
      "Vector sizes in bytes, K/M/G binary (default 4K,256K,4M,64M, or the preset's; the verdict needs 64M; --transport link carries at most 256M)",
    valueHint: 'LIST',
  },
  'per-round': {
    type: 'boolean',
    description:
      "Print every measured round's time and GB/s on stderr (default off; on for --preset verbose and stress)",
  },
  'timeout-s': {
    type: 'string',
    description: 'How long to wait for the other ranks, and for each round',
    default: '60',
    valueHint: 'S',
  },
  json: {
    type: 'boolean',
    description:
      'Print one JSON document on stdout and nothing else there: {rank, world_size, transport, preset, rounds, warmup_rounds, sizes: [{bytes, rounds, latency_us: {min, avg, median, p99, max}, bandwidth_gbps: {avg, peak, median}, round_us}], verdict: {transport, status, judged_bytes, avg_gbps, threshold_gbps, line, checks}} (logs and progress go to stderr)',
    default: false,
  },
} as const satisfies ArgsDef
type PingArgs = ParsedArgs<typeof pingArgs>

export default defineCommand({
  meta: {
    name: 'rdma-ping',
    description:
      'Smoke-test the links between ranks: rounds of all_sum per size, checked exactly, with latency and bandwidth per size and a verdict on the link',
  },
  args: pingArgs,
  async run({ args }) {
    // stdout carries only the report (the table, or the one JSON document); every log and progress line goes to stderr
    const consolaStdout = consola.options.stdout
    consola.options.stdout = process.stderr
    try {
      await ping(args)
    } finally {
      consola.options.stdout = consolaStdout
    }
  },
})

async function ping(args: PingArgs): Promise<void> {
  const rank = nonNegativeInt('rank', args.rank)
  const worldSize = positiveInt(args['world-size'], 'world-size')
  const timeoutMs = positiveInt(args['timeout-s'], 'timeout-s') * 1000
  if (worldSize < 2) throw new UsageError('--world-size must be at least 2')
  if (rank >= worldSize) throw new UsageError(`--rank ${rank} is not below --world-size ${worldSize}`)
  const plan = resolvePingPlan({
    preset: args.preset,
    rounds: args.rounds === undefined ? undefined : positiveInt(args.rounds, 'rounds'),
    sizes: args.sizes,
    perRound: args['per-round'],
  })
  if (!['auto', 'link', 'ring', 'jaccl'].includes(args.transport))
    throw new UsageError(`unknown --transport '${args.transport}'`, 'use auto, jaccl, ring or link')
  const { transport, reason } = chooseTransport(args.transport as PingTransport | 'auto', transportProbes())
  const tooLarge = plan.sizes.find((n) => n > LINK_MAX_VECTOR_BYTES)
  if (transport === 'link' && tooLarge !== undefined)
    throw new UsageError(
      `--sizes ${tooLarge} is larger than the sealed link carries in one frame (${LINK_MAX_VECTOR_BYTES} bytes, 256M)`,
      'use sizes up to 256M over --transport link, or --transport ring or jaccl',
    )
  if (transport === 'jaccl') await doctorJaccl()
  consola.info(`transport: ${reason}`)
  consola.info(
    `${plan.preset ? `preset ${plan.preset}: ` : ''}${plan.rounds} rounds of ${plan.sizes.map(formatBytes).join(', ')}${plan.perRound ? ', every round printed' : ''}`,
  )
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
  // after the last round: over the link, rank 0 waits until every rank has the last sum and each rank closes at once
  // (close() drops what the socket has not taken); MLX's collectives end together, a short pause lets frames leave
  let finish = () => Bun.sleep(50)
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
    finish = () => hubFinish(links, timeoutMs)
    close = () => (links.forEach((l) => l.close()), stop())
  } else {
    const at = hostPort(peer!, 'peer')
    const link = await dialRankZero(at.host, at.port, timeoutMs, linkOpts)
    allSum = spokeAllSum(link, timeoutMs)
    finish = () => spokeFinish(link, timeoutMs)
    close = () => link.close()
  }
  const progress = progressLine({ enabled: !plan.perRound })
  try {
    const sizes = await pingRounds(allSum, {
      rank,
      worldSize,
      sizes: plan.sizes,
      rounds: plan.rounds,
      warmup: WARMUP_ROUNDS,
      onRound: (d) =>
        plan.perRound
          ? consola.info(
              `${formatBytes(d.bytes)} round ${d.round}/${d.rounds}: ${formatLatency(d.us)}, ${gbps(d.bytes, d.us).toFixed(3)} GB/s`,
            )
          : progress.update(`${formatBytes(d.bytes)}: round ${d.round}/${d.rounds}`),
      onProgress: (l) => (progress.done(), consola.info(l)),
    })
    await finish()
    const report: PingReport = {
      rank,
      world_size: worldSize,
      transport,
      preset: plan.preset,
      rounds: plan.rounds,
      warmup_rounds: WARMUP_ROUNDS,
      sizes,
      verdict: judgeLink(transport, worldSize, sizes),
    }
    if (args.json) console.log(JSON.stringify(report))
    else for (const line of reportLines(report)) console.log(line)
  } finally {
    progress.done()
    close()
  }
}
