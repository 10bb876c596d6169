/** `dbcluster doctor`: PASS/FAIL/SKIP checks with a one-line fix each; exits non-zero when any check fails. */
import { defineCommand } from 'citty'
import { DbcError, UsageError } from '../errors.ts'
import { defaultEnv, runDoctor } from '../doctor/checks.ts'
import { defaultKeyFile, defaultPinFile } from '../trust/local-identity.ts'
import { NativeTpChannel } from '../tensor-parallel/sealed-group.ts'

export default defineCommand({
  meta: {
    name: 'doctor',
    description:
      'Check this machine for clustering: RDMA, Thunderbolt, OS, data path, identity, memory, coordinator, clock; with --cluster, the nodes against each other and the plan',
  },
  args: {
    coordinator: {
      type: 'string',
      description: 'Coordinator URL or HOST:PORT to check reachability and clock skew against',
      valueHint: 'URL',
    },
    cluster: {
      type: 'string',
      description:
        'A running head’s API URL: compare OS versions, clocks and free memory across its nodes against the plan',
      valueHint: 'URL',
    },
    nodes: {
      type: 'string',
      description: 'Nodes in the cluster, for the Thunderbolt Bridge loop check (default: from --cluster)',
      valueHint: 'N',
    },
    'need-gib': { type: 'string', description: 'Memory (GiB) the layer plan needs on this machine', valueHint: 'GIB' },
    'key-file': {
      type: 'string',
      description: 'Identity key file (default: $DBCLUSTER_HOME/identity.key)',
      valueHint: 'FILE',
    },
    json: { type: 'boolean', description: 'Print the results as a JSON array', default: false },
  },
  async run({ args }) {
    let needBytes: number | undefined
    if (args['need-gib'] !== undefined) {
      const gib = Number(args['need-gib'])
      if (!Number.isFinite(gib) || gib <= 0)
        throw new UsageError(`--need-gib must be a positive number, got '${args['need-gib']}'`, 'e.g. --need-gib 48')
      needBytes = gib * 2 ** 30
    }
    let nodes: number | undefined
    if (args.nodes !== undefined) {
      nodes = Number(args.nodes)
      if (!Number.isInteger(nodes) || nodes < 1)
        throw new UsageError(`--nodes must be a positive integer, got '${args.nodes}'`)
    }
    const cluster = args.cluster && !args.cluster.includes('://') ? `http://${args.cluster}` : args.cluster
    const results = await runDoctor(
      defaultEnv({
        keyFile: args['key-file'] ?? defaultKeyFile(),
        pinFile: defaultPinFile(),
        coordinator: args.coordinator,
        cluster,
        nodes,
        needBytes,
        nativeTpSealing: () => NativeTpChannel.available(),
      }),
    )
    if (args.json) console.log(JSON.stringify(results))
    else
      for (const r of results)
        console.log(`${r.status.padEnd(4)}  ${r.name}: ${r.detail}${r.fix ? `\n      fix: ${r.fix}` : ''}`)
    const failed = results.filter((r) => r.status === 'FAIL')
    if (failed.length)
      throw new DbcError(
        'E_DOCTOR',
        `${failed.length} check(s) failed: ${failed.map((r) => r.name).join(', ')}`,
        'apply the fixes above and run doctor again',
      )
  },
})
