/** Reads the identity key a running node presents on its link port, for pinning it by hand (`trust pin --from-peer`).
 * It runs the initiator's half of the handshake (docs/protocol.md §Handshake) up to the peer's ACK: the key it returns
 * is the one whose signature over the transcript verified (and whose key confirmation checked out). It never sends
 * FINISH — it tells the peer why it stops instead — so no link is made and this side trusts nothing yet. */
import type { Socket } from 'bun'
import { TrustError } from '../trust/errors.ts'
import { InitiatorHandshake, HANDSHAKE_TIMEOUT_MS } from '../trust/handshake.ts'
import type { Identity } from '../trust/identity.ts'
import type { CipherName } from './aead-channel.ts'
import { LinkError } from './errors.ts'
import { decodeError, encodeError, FrameType, frameTypeName } from './frames.ts'
import { encodeFrame, FrameDecoder } from './framing.ts'
import { HANDSHAKE_FRAME_BYTES } from './tcp-link.ts'
import { peerText } from '../peer-text.ts'

export interface PeerIdentityRequest {
  host: string
  port: number
  /** This machine's identity and serial: the peer checks them before it answers, as in any handshake. */
  identity: Identity
  serial: string
  clusterId: string
  /** The cipher the peer seals with (its serve --cipher): the handshake refuses a HELLO that names another. */
  cipher?: CipherName
  timeoutMs?: number
}

export interface PresentedIdentity {
  serial: string
  /** 33-byte compressed P-256 key, proven by the peer's signature over this handshake's transcript. */
  publicKey: Uint8Array
}

/** Why this side stops after ACK; the peer logs it. */
export const IDENTITY_READ_CODE = 'E_IDENTITY_READ'

export function readPeerIdentity(r: PeerIdentityRequest): Promise<PresentedIdentity> {
  const where = `${r.host}:${r.port}`
  const timeoutMs = r.timeoutMs ?? HANDSHAKE_TIMEOUT_MS
  // authorize is asked only after the peer's signature and key confirmation verified; the pin decision is the caller's
  const handshake = new InitiatorHandshake({
    identity: r.identity,
    serial: r.serial,
    clusterId: r.clusterId,
    cipher: r.cipher,
    authorize: () => 'authorized',
    randomBytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
    timeoutMs,
  })
  const decoder = new FrameDecoder(HANDSHAKE_FRAME_BYTES)
  return new Promise<PresentedIdentity>((resolve, reject) => {
    let socket: Socket<undefined> | null = null
    let settled = false
    const finish = (outcome: { ok: PresentedIdentity } | { error: Error }) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket?.end()
      if ('ok' in outcome) resolve(outcome.ok)
      else reject(outcome.error)
    }
    const timer = setTimeout(
      () =>
        finish({
          error: new TrustError(
            'E_HANDSHAKE_TIMEOUT',
            `${where} did not answer the handshake within ${timeoutMs} ms`,
            'is that a dbcluster link port (serve --peers or --discover) of the same release?',
          ),
        }),
      timeoutMs,
    )
    const onFrame = async (type: number, body: Uint8Array) => {
      if (type === FrameType.error) return finish({ error: refused(where, r.serial, body) })
      if (type !== FrameType.ack)
        throw new LinkError(
          'E_FRAME_UNEXPECTED',
          `${where} answered the handshake with '${frameTypeName(type) ?? type}'`,
          'is that a dbcluster link port?',
        )
      const { result } = await handshake.receiveAck(body)
      socket?.write(
        encodeFrame(
          FrameType.error,
          encodeError({
            code: IDENTITY_READ_CODE,
            message: `${r.serial} read this node's identity key to pin it (dbcluster trust pin --from-peer); no link was made`,
          }),
        ),
      )
      finish({ ok: { serial: result.peerSerial, publicKey: result.peerPublicKey } })
    }
    Bun.connect({
      hostname: r.host,
      port: r.port,
      socket: {
        open(s) {
          socket = s
          s.write(encodeFrame(FrameType.hello, handshake.hello()))
        },
        data(_s, chunk) {
          if (settled) return
          try {
            const frames = decoder.push(new Uint8Array(chunk)).map((f) => ({ type: f.type, body: f.body.slice() }))
            const first = frames[0]
            if (first) onFrame(first.type, first.body).catch((error) => finish({ error }))
          } catch (error) {
            finish({ error: error as Error })
          }
        },
        close() {
          finish({
            error: new LinkError(
              'E_PEER_CLOSED',
              `${where} closed the connection before presenting its identity`,
              'is that a dbcluster link port (serve --peers or --discover)?',
            ),
          })
        },
        error(_s, error) {
          finish({ error: new LinkError('E_SOCKET', `${where}: ${error.message}`) })
        },
      },
    }).catch((error: Error) =>
      finish({
        error: new LinkError(
          'E_CONNECT',
          `cannot reach ${where}: ${error.message}`,
          'is the peer serving (serve --peers or --discover) and is the address its link port?',
        ),
      }),
    )
  })
}

/** The peer's refusal, with what to do about the usual one: it has not pinned this machine yet. */
function refused(where: string, serial: string, body: Uint8Array): TrustError {
  const e = decodeError(body)
  const code = e?.code ?? 'E_PEER_REFUSED'
  const hint =
    code === 'E_PEER_NOT_PINNED'
      ? `a node answers only machines it trusts: pin this machine (${serial}) on the peer first (dbcluster trust pin --serial ${serial} --key <this machine's key from 'dbcluster identity show'>), or pin the peer here with --key from its 'dbcluster identity show'`
      : code === 'E_CLUSTER_MISMATCH'
        ? "pass the peer's --cluster-id"
        : undefined
  return new TrustError(
    code,
    `${where} refused the handshake: ${e ? `${e.code}: ${peerText(e.message)}` : '(unreadable reason)'}`,
    hint,
  )
}
