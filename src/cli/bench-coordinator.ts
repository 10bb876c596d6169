/** `dbcluster bench coordinator`: registrations per second and peer-list / peer-key latency with many registered providers. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { median, percentile } from '../bench/stats.ts'
import { runCoordinatorBench } from '../coordinator/benchmark.ts'
import { UsageError } from '../errors.ts'
import { positiveInt } from './number-list.ts'

const round = (x: number, digits = 3) => Number(x.toFixed(digits))
const summary = (ms: number[]) => ({
  p50_ms: round(percentile(ms, 50)),
  p99_ms: round(percentile(ms, 99)),
  median_ms: round(median(ms)),
  samples: ms.length,
})

export default defineCommand({
  meta: {
    name: 'coordinator',
    description:
      'Coordinator under load: registrations per second, and p50/p99 of the RDMA peer-list and peer-key queries with N providers registered',
  },
  args: {
    json: {
      type: 'boolean',
      description:
        'Print one JSON object {providers, registrations_per_second, peer_list: {p50_ms, p99_ms}, peer_key: {p50_ms, p99_ms}, reference}',
      default: false,
    },
    providers: {
      type: 'string',
      description: 'Providers registered (attested, RDMA-enabled, each on its own WebSocket)',
      default: '1000',
    },
    'per-account': { type: 'string', description: 'Providers per account', default: '10' },
    concurrency: { type: 'string', description: 'Registrations in flight at once', default: '32' },
    queries: { type: 'string', description: 'Timed queries per endpoint (after 50 warm-up queries)', default: '1000' },
  },
  async run({ args }) {
    const providers = positiveInt(args.providers, 'providers')
    const queries = positiveInt(args.queries, 'queries')
    const result = await runCoordinatorBench({
      providers,
      providersPerAccount: positiveInt(args['per-account'], 'per-account'),
      concurrency: positiveInt(args.concurrency, 'concurrency'),
      peerListQueries: queries,
      peerKeyQueries: queries,
      onProgress: (line) => !args.json && consola.start(line),
    })
    const report = {
      providers: result.providers,
      accounts: result.accounts,
      registrations_per_second: round(result.registration.perSecond, 1),
      registration_seconds: round(result.registration.seconds),
      registration_concurrency: result.registration.concurrency,
      attestation_signing_seconds: round(result.signingSeconds),
      peer_list: { ...summary(result.peerListMs), peers_returned: result.peersReturned },
      peer_key: summary(result.peerKeyMs),
      reference: {
        health: summary(result.healthMs),
        attestation_verifies_per_second: round(result.verifyPerSecond, 1),
      },
      registrations_vs_verify_ceiling: round(result.registration.perSecond / result.verifyPerSecond),
    }
    if (args.json) {
      console.log(JSON.stringify(report))
      return
    }
    consola.info(
      `${report.providers} providers in ${report.accounts} accounts; registered in ${report.registration_seconds} s (${report.registration_concurrency} at a time)`,
    )
    console.log('| measure | value |\n| --- | --- |')
    console.log(`| registrations/s (connect + attestation check + store) | ${report.registrations_per_second} |`)
    console.log(
      `| peer list p50 / p99 (${report.peer_list.peers_returned} peers) | ${report.peer_list.p50_ms} ms / ${report.peer_list.p99_ms} ms |`,
    )
    console.log(`| peer key p50 / p99 | ${report.peer_key.p50_ms} ms / ${report.peer_key.p99_ms} ms |`)
    console.log(
      `| reference: /health p50 / p99 | ${report.reference.health.p50_ms} ms / ${report.reference.health.p99_ms} ms |`,
    )
    console.log(
      `| reference: attestation verifies/s (one thread) | ${report.reference.attestation_verifies_per_second} (registrations reach ${report.registrations_vs_verify_ceiling} of it) |`,
    )
  },
})
