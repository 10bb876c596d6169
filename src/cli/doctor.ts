/** `dbcluster doctor`: PASS/FAIL/SKIP checks with a one-line fix each; exits non-zero when any check fails. */
import { defineCommand } from 'citty'
import { DbcError, UsageError } from '../errors.ts'
import { defaultEnv, runDoctor } from '../doctor/checks.ts'
import { defaultKeyFile, defaultPinFile } from '../trust/local-identity.ts'

export default defineCommand({
  meta: { name: 'doctor', description: 'Check this machine for clustering: RDMA, Thunderbolt, OS, data path, identity, memory, coordinator, clock' },
  args: {
    coordinator: { type: 'string', description: 'Coordinator URL or HOST:PORT to check reachability and clock skew against', valueHint: 'URL' },
    'need-gib': { type: 'string', description: 'Memory (GiB) the layer plan needs on this machine', valueHint: 'GIB' },
    'key-file': { type: 'string', description: 'Identity key file (default: $DBCLUSTER_HOME/identity.key)', valueHint: 'FILE' },
    json: { type: 'boolean', description: 'Print the results as a JSON array', default: false },
  },
  async run({ args }) {
    let needBytes: number | undefined
    if (args['need-gib'] !== undefined) {
      const gib = Number(args['need-gib'])
      if (!Number.isFinite(gib) || gib <= 0) throw new UsageError(`--need-gib must be a positive number, got '${args['need-gib']}'`, 'e.g. --need-gib 48')
      needBytes = gib * 2 ** 30
    }
    const results = await runDoctor(defaultEnv({ keyFile: args['key-file'] ?? defaultKeyFile(), pinFile: defaultPinFile(), coordinator: args.coordinator, needBytes }))
    if (args.json) console.log(JSON.stringify(results))
    else for (const r of results) console.log(`${r.status.padEnd(4)}  ${r.name}: ${r.detail}${r.fix ? `\n      fix: ${r.fix}` : ''}`)
    const failed = results.filter((r) => r.status === 'FAIL')
    if (failed.length) throw new DbcError('E_DOCTOR', `${failed.length} check(s) failed: ${failed.map((r) => r.name).join(', ')}`, 'apply the fixes above and run doctor again')
  },
})
