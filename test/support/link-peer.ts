/** A link peer process for tests and benchmarks: listens as `bob` and echoes every data frame back. */
import { FrameType } from '../../src/link/frames.ts'
import { listenLinks } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from './identities.ts'

const port = Number(process.env.PORT ?? 0)
const listener = listenLinks(
  '127.0.0.1',
  port,
  {
    identity: testIdentity(2),
    serial: 'bob',
    clusterId: 'c',
    authorize: pins({ alice: testIdentity(1), bob: testIdentity(2) }),
    pingIntervalMs: Number(process.env.PING_MS ?? 5000),
  },
  (link) =>
    link.onFrame(
      (f) =>
        f.type === FrameType.data && link.send(FrameType.data, f.payload, { stage: f.stage, requestId: f.requestId }),
    ),
)
console.log(`listening ${listener.port}`)
