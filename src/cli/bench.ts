/** `dbcluster bench`: the benchmarks, one subcommand each, gathered under one command. */
import { defineCommand } from 'citty'

export default defineCommand({
  meta: {
    name: 'bench',
    description: 'Measure kernels, decode, links and serving on this machine (see docs/benchmarks.md)',
  },
  subCommands: {
    kernels: () => import('./bench-kernels.ts').then((m) => m.default),
    decode: () => import('./bench-decode.ts').then((m) => m.default),
    coordinator: () => import('./bench-coordinator.ts').then((m) => m.default),
    link: () => import('./bench-link.ts').then((m) => m.default),
    serve: () => import('./bench-serve.ts').then((m) => m.default),
    sweep: () => import('./bench-sweep.ts').then((m) => m.default),
    accuracy: () => import('./bench-accuracy.ts').then((m) => m.default),
  },
})
