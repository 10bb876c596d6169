/** A rank 1 that meets rank 0 over the pinned link, then misbehaves, for the meeting tests.
 * Usage: bun tp-impostor.ts HOME PORT MODE MODEL — MODE wrong-key (hello sealed with another key), other-rank (hello
 * names rank 2), stranger-rank (says rank 5 in clear), other-settings (serves MODEL with another --max-context). Rank 0
 * runs MODEL with --max-batch 8 --max-context 256 --tp 2. Exits when rank 0 closes the link. */
import { join } from 'node:path'
import { MEET } from '../../src/tensor-parallel/start-sealed.ts'
import { BlockingSocket } from '../../src/tensor-parallel/blocking-socket.ts'
import { openTpChannel } from '../../src/tensor-parallel/sealed-group.ts'
import { FrameType } from '../../src/link/frames.ts'
import { servingFingerprint } from '../../src/model/serving-fingerprint.ts'
import { dialRankZero } from '../../src/tensor-parallel/rank-meeting.ts'
import { signAttestation } from '../../src/trust/attestation.ts'
import { loadSoftwareIdentity } from '../../src/trust/identity-software.ts'
import { machineFacts } from '../../src/trust/machine-info.ts'
import { authorizeByPins, FilePinStore } from '../../src/trust/pinned-keys.ts'

const [home, port, mode, model] = process.argv.slice(2)
const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer)
const identity = loadSoftwareIdentity(join(home!, 'identity.key')).identity
const link = await dialRankZero('127.0.0.1', Number(port), 10_000, {
  identity,
  serial: 'node-1',
  authorize: authorizeByPins(new FilePinStore(join(home!, 'pins.json'))),
  clusterId: 'dbcluster',
})
const fingerprint = servingFingerprint(model!, { maxBatch: 8, maxLen: mode === 'other-settings' ? 512 : 256, tp: 2 })
const offerFrame = link.nextFrame((f) => f.type === FrameType.data && f.requestId === MEET.offer, 10_000)
link.send(FrameType.data, Uint8Array.from([...u32(1), ...fingerprint]), { requestId: MEET.rank })
// an honest rank's attestation (rank 0 relays it only with a coordinator), so the misbehaviour comes after the meeting
const attestation = await signAttestation(identity, { ...machineFacts(), serial: 'node-1', rdmaEnabled: false })
link.send(FrameType.data, new TextEncoder().encode(JSON.stringify(attestation)), { requestId: MEET.attestation })
const offer = (await offerFrame).payload
const socket = BlockingSocket.connect(
  '127.0.0.1',
  new DataView(offer.buffer, offer.byteOffset).getUint32(0, true),
  5000,
)
socket.send(u32(mode === 'stranger-rank' ? 5 : 1), 5000)
const key = mode === 'wrong-key' ? new Uint8Array(32).fill(1) : offer.slice(4)
openTpChannel(socket, key, 'dbcluster', 1, 0).send(FrameType.tpHello, u32(mode === 'other-rank' ? 2 : 1), 5000)
link.send(FrameType.data, new Uint8Array(0), { requestId: MEET.connected })
await new Promise<void>((done) => link.onClose(() => done()))
