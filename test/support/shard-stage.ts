/** A stage process for shard-transfer tests: connects to the head at PORT as `stage` (test identity 2), receives the
 * files of layers [LO, HI) into DIR, printing one JSON line per event and progress step, then the result. */
import { receiveShards } from '../../src/distribution/shard-transfer.ts'
import { connectLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from './identities.ts'

const env = process.env
const link = await connectLink('127.0.0.1', Number(env.PORT), {
  identity: testIdentity(2),
  serial: 'stage',
  clusterId: 'c',
  authorize: pins({ head: testIdentity(1), stage: testIdentity(2) }),
})
const print = (o: object) => console.log(JSON.stringify(o))
try {
  const result = await receiveShards(link, {
    dir: env.DIR!,
    lo: Number(env.LO),
    hi: Number(env.HI),
    first: env.FIRST === '1',
    last: env.LAST === '1',
    headKey: testIdentity(1).publicKey, // pinned for the head
    chunkBytes: env.CHUNK ? Number(env.CHUNK) : undefined,
    throttleBytesPerSecond: env.THROTTLE ? Number(env.THROTTLE) : undefined,
    onEvent: (e) => print({ event: e }),
    onProgress: (p) => print({ progress: p.bytes }),
  })
  print({ result: { files: result.files, received: result.received, bytes: result.bytes } })
  link.close()
  process.exit(0)
} catch (error) {
  print({ error: { code: (error as { code?: string }).code, message: (error as Error).message } })
  process.exit(1)
}
