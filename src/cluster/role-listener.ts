/** A node's one listening port, shared by the two kinds of link that reach it: its ring predecessor, and (on the head)
 * the control links stages open to join. Each dialer's first frame says which it is (join-messages.ts); a link that
 * says nothing within a few seconds, or something else first, is closed with the reason. */
import { consola } from 'consola'
import { LinkError } from '../link/errors.ts'
import { FrameType } from '../link/frames.ts'
import { listenLinks, type LinkOptions, type SealedLink } from '../link/tcp-link.ts'
import { senderMismatch } from './frame-header.ts'
import { decodeRole, encodeRole, type LinkRoleName } from './join-messages.ts'

const log = consola.withTag('cluster')

/** How long a dialer has to say what it is after the handshake. */
export const ROLE_TIMEOUT_MS = 10_000

export type RoleHandler = (link: SealedLink, rank: number) => void

export class RoleListener {
  readonly #handlers = new Map<LinkRoleName, RoleHandler>()
  readonly #listener: ReturnType<typeof listenLinks>

  constructor(host: string, port: number, options: LinkOptions) {
    this.#listener = listenLinks(host, port, options, (link) => this.#classify(link))
  }

  get port(): number {
    return this.#listener.port
  }

  /** Who handles links of this role from now on (replaces an earlier handler). */
  handle(role: LinkRoleName, handler: RoleHandler): void {
    this.#handlers.set(role, handler)
  }

  stop(): void {
    this.#listener.stop(true)
  }

  #classify(link: SealedLink): void {
    const timer = setTimeout(
      () => link.close(new LinkError('E_ROLE', `${link.peerSerial} did not say its role within ${ROLE_TIMEOUT_MS} ms`)),
      ROLE_TIMEOUT_MS,
    )
    const off = link.onFrame((f) => {
      off()
      clearTimeout(timer)
      if (f.type !== FrameType.role)
        return link.close(new LinkError('E_ROLE', `${link.peerSerial} sent frame type ${f.type} before its role`))
      let role: { role: LinkRoleName; rank: number }
      try {
        role = decodeRole(f.payload)
      } catch (error) {
        return link.close(
          new LinkError('E_ROLE', `${link.peerSerial} sent a bad role message: ${(error as Error).message}`),
        )
      }
      const mismatch = senderMismatch(f, role.rank, 'the rank it announces')
      if (mismatch) return link.close(mismatch)
      const handler = this.#handlers.get(role.role)
      if (!handler) {
        log.warn(`refused a ${role.role} link from ${link.peerSerial} (rank ${role.rank}): this node takes none`)
        return link.close(
          new LinkError(
            'E_ROLE',
            `this node takes no ${role.role} links${role.role === 'control' ? ' (only the head, rank 0, plans the cluster)' : ''}`,
          ),
        )
      }
      handler(link, role.rank)
    })
    link.onClose(() => clearTimeout(timer))
  }
}

/** What a dialer sends first on a new link; the header's stage is its rank too (the listener checks they agree). */
export function announceRole(link: Pick<SealedLink, 'send'>, role: LinkRoleName, rank: number): void {
  link.send(FrameType.role, encodeRole({ role, rank }), { stage: rank })
}
