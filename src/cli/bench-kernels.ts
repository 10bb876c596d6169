/** `dbcluster bench kernels`: memory bandwidth and gemv throughput of the cpu backend. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { runKernelBench, type KernelDtype } from '../bench/kernels.ts'
import { UsageError } from '../errors.ts'
import { openCpuBackend } from '../tensor/cpu.ts'

const DTYPES: KernelDtype[] = ['f32', 'bf16', 'q4', 'q8']

export default defineCommand({
  meta: {
    name: 'kernels',
    description:
      'Memory read bandwidth and matrix-vector GB/s (f32, bf16, q4, q8; batch 1 and 8) against that roofline, and GFLOP/s (for prompt-sized batches: --batches 128)',
  },
  args: {
    json: {
      type: 'boolean',
      description: 'Print one JSON object {memory_read_gbps, gemv: [{dtype, rows, cols, batch, gbps, roofline_ratio}]}',
      default: false,
    },
    threads: { type: 'string', description: 'Compute threads (default: all cores)', valueHint: 'N' },
    dtypes: { type: 'string', description: 'Comma-separated weight types to measure', default: DTYPES.join(',') },
    batches: { type: 'string', description: 'Comma-separated batch sizes', default: '1,8' },
    shapes: { type: 'string', description: 'Comma-separated ROWSxCOLS weight shapes', default: '4096x4096,4096x14336' },
  },
  run({ args }) {
    const dtypes = args.dtypes.split(',').map((d) => d.trim()) as KernelDtype[]
    for (const d of dtypes)
      if (!DTYPES.includes(d)) throw new UsageError(`unknown dtype '${d}'`, `use some of ${DTYPES.join(', ')}`)
    const batches = args.batches.split(',').map(Number)
    const shapes = args.shapes.split(',').map((s) => {
      const [r, c] = s.toLowerCase().split('x').map(Number)
      if (!r || !c || c % 128)
        throw new UsageError(`bad shape '${s}'`, 'use ROWSxCOLS with COLS a multiple of 128, e.g. 4096x4096')
      return [r, c] as [number, number]
    })
    if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new UsageError(`bad batch list '${args.batches}'`)
    const threads = args.threads ? Number(args.threads) : undefined
    const backend = openCpuBackend({ threads })
    const result = runKernelBench(backend, {
      dtypes,
      batches,
      shapes,
      onProgress: (line) => !args.json && consola.start(line),
    })
    if (args.json) {
      console.log(JSON.stringify(result))
      return
    }
    consola.info(
      `memory read: ${result.memory_read_gbps} GB/s (${result.threads} threads), ${result.memory_read_gbps_one_thread} GB/s (1 thread)`,
    )
    console.log(
      '| dtype | shape | batch | GB/s | roofline | µs/call | GFLOP/s |\n| --- | --- | --- | --- | --- | --- | --- |',
    )
    for (const g of result.gemv)
      console.log(
        `| ${g.dtype} | ${g.rows}×${g.cols} | ${g.batch} | ${g.gbps} | ${g.roofline_ratio} | ${g.median_us} | ${g.gflops} |`,
      )
  },
})
