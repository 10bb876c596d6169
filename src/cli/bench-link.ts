/** `dbcluster bench link`: sealed vs plaintext round trips between two processes, and AEAD seal/open speed. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { runLinkBench, runLinkPeer } from '../bench/link.ts'
import { UsageError } from '../errors.ts'
import { parseCipher } from '../link/aead-channel.ts'
import { selfCommand } from '../self-command.ts'

const parseSize = (s: string): number => {
  const m = /^(\d+)([KMG]?)B?$/i.exec(s.trim())
  if (!m) throw new UsageError(`bad size '${s}'`, 'use e.g. 4K, 256K, 4M, 64M')
  return Number(m[1]) * ({ '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 } as Record<string, number>)[m[2]!.toUpperCase()]!
}

export default defineCommand({
  meta: {
    name: 'link',
    description:
      'Round-trip latency and throughput of the sealed link against plaintext framing and a bare socket echo (two processes on loopback), AEAD and frame-channel GB/s, and a shard transfer over the sealed link against raw TCP',
  },
  args: {
    sizes: {
      type: 'string',
      description: 'Comma-separated payload sizes for the round trips',
      default: '4K,64K,256K,4M,64M',
    },
    rounds: {
      type: 'string',
      description:
        'Round trips per size, after as many untimed ones up to 4M (2 above) (default: 300 up to 64K, 40 up to 4M, 6 above)',
      valueHint: 'N',
    },
    'aead-sizes': {
      type: 'string',
      description: 'Comma-separated buffer sizes for in-process seal+open GB/s',
      default: '4K,256K,4M,32M',
    },
    cipher: {
      type: 'string',
      description:
        'Cipher of the sealed round trips: aes-256-gcm (default) or chacha20-poly1305 (native through the shim where libcrypto loads); the seal+open rows measure both',
      default: 'aes-256-gcm',
    },
    frames: {
      type: 'string',
      description:
        "Who seals the link's frames on both ends: auto (the shim's C link channel where it loads), native, or script (the TypeScript channel)",
      default: 'auto',
    },
    json: {
      type: 'boolean',
      description:
        'Print {frames, sizes: [{bytes, sealed_rtt_us_p50, plain_rtt_us_p50, raw_rtt_us_p50, sealed_vs_raw, plain_vs_raw, sealed_gbps, plain_gbps}], aead: [{cipher, implementation, bytes, gbps}], channel: [{cipher, implementation, bytes, gbps}], file_transfer: {bytes, sealed_seconds, plain_seconds, sealed_gbps, plain_gbps, ratio}}',
      default: false,
    },
    'file-size': {
      type: 'string',
      description: 'Shard size for the file-transfer row (sealed shard transfer vs raw TCP, both to disk); 0 skips it',
      default: '1G',
    },
    'file-repeat': {
      type: 'string',
      description: 'Shard transfers each way, sealed and raw alternating; the row gives the medians',
      default: '1',
      valueHint: 'N',
    },
    'peer-key': { type: 'string', description: 'Internal: run as the benchmark peer, pinning this initiator key' },
    'file-dir': { type: 'string', description: 'Internal: the benchmark peer serves the shard in this folder' },
  },
  async run({ args }) {
    const cipher = parseCipher(args.cipher)
    const frames = args.frames
    if (frames !== 'auto' && frames !== 'native' && frames !== 'script')
      throw new UsageError(`unknown --frames '${frames}'`, 'use auto, native or script')
    if (args['peer-key']) return runLinkPeer(args['peer-key'], cipher, args['file-dir'], frames)
    const rounds = args.rounds === undefined ? undefined : Number(args.rounds)
    if (rounds !== undefined && (!Number.isInteger(rounds) || rounds < 1))
      throw new UsageError(`--rounds must be a positive integer, not '${args.rounds}'`)
    const fileRepeat = Number(args['file-repeat'])
    if (!Number.isInteger(fileRepeat) || fileRepeat < 1)
      throw new UsageError(`--file-repeat must be a positive integer, not '${args['file-repeat']}'`)
    const result = await runLinkBench({
      sizes: args.sizes.split(',').map(parseSize),
      aeadSizes: args['aead-sizes'].split(',').map(parseSize),
      rounds,
      cipher,
      fileBytes: args['file-size'] === '0' ? 0 : parseSize(args['file-size']),
      fileRepeat,
      frames,
      peerCommand: [...selfCommand(), 'bench', 'link'],
      onProgress: (l) => !args.json && consola.start(l),
    })
    if (args.json) return console.log(JSON.stringify(result))
    console.log(`frames sealed by: ${result.frames}\n`)
    console.log(
      `| bytes | sealed RTT p50 µs | plain RTT p50 µs | raw RTT p50 µs | sealed/raw | plain/raw | sealed/plain | sealed GB/s | plain GB/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    )
    for (const s of result.sizes)
      console.log(
        `| ${s.bytes} | ${s.sealed_rtt_us_p50} | ${s.plain_rtt_us_p50} | ${s.raw_rtt_us_p50} | ${s.sealed_vs_raw} | ${s.plain_vs_raw} | ${s.ratio} | ${s.sealed_gbps} | ${s.plain_gbps} |`,
      )
    console.log(`\n| cipher | implementation | bytes | seal+open GB/s |\n| --- | --- | --- | --- |`)
    for (const a of result.aead) console.log(`| ${a.cipher} | ${a.implementation} | ${a.bytes} | ${a.gbps} |`)
    console.log(`\n| cipher | frame channel | bytes | frame seal+open GB/s |\n| --- | --- | --- | --- |`)
    for (const a of result.channel) console.log(`| ${a.cipher} | ${a.implementation} | ${a.bytes} | ${a.gbps} |`)
    const f = result.file_transfer
    if (f)
      console.log(
        `\n| shard transfer bytes | sealed link GB/s | raw TCP GB/s | raw/sealed |\n| --- | --- | --- | --- |\n| ${f.bytes} | ${f.sealed_gbps} | ${f.plain_gbps} | ${f.ratio} |`,
      )
  },
})
