/** A serving node's side of the coordinator: it registers itself (a fresh signed attestation per connection, under the
 * serial its links present) so its peers can look up and pin its key, and it authorizes a peer it has no pin for by
 * asking the coordinator for that serial's attested key (pinned on first contact; never re-pinned silently). */
import { consola } from 'consola'
import { signAttestation } from '../trust/attestation.ts'
import type { Identity } from '../trust/identity.ts'
import { machineFacts, rdmaProbes } from '../trust/machine-info.ts'
import { authorizeByPins, type Authorizer, type PinStore } from '../trust/pinned-keys.ts'
import { decideRdma } from '../trust/rdma-gate.ts'
import type { CoordinatorClient } from './client.ts'
import { CoordinatorError } from './errors.ts'
import { peerText, RateLimitedLog } from '../peer-text.ts'
import type { ProviderConnection } from './provider-connection.ts'

const log = consola.withTag('coordinator')
/** A refused peer retries every backoff: its refusal is logged once per window, with a count. */
const refusals = new RateLimitedLog((line) => log.warn(line))

export interface NodeRegistration {
  connection: ProviderConnection
  /** Resolves once registered (true), or false when the coordinator refused or could not be reached (logged). */
  registered: Promise<boolean>
}

export function registerNode(
  client: CoordinatorClient,
  identity: Identity,
  serial: string,
  options: { heartbeatMs?: number; requestRdma?: boolean; mdaChain?: string[] } = {},
): NodeRegistration {
  let said = ''
  const connection = client.connectProvider({
    heartbeatMs: options.heartbeatMs ?? 10_000,
    registration: async (challenge) => {
      // RDMA is opt-in (serve --rdma), and registered only when this machine's capability gate passes
      const rdma = decideRdma(options.requestRdma ?? false, rdmaProbes())
      if (options.requestRdma && !rdma.enabled && rdma.reason !== said)
        log.warn(`--rdma: not registering this node as RDMA-capable: ${(said = rdma.reason)}`)
      return {
        type: 'register',
        rdma_enabled: rdma.enabled,
        attestation: await signAttestation(identity, {
          ...machineFacts(),
          serial,
          rdmaEnabled: rdma.enabled,
          challenge,
        }),
        ...(options.mdaChain ? { mda_chain: options.mdaChain } : {}),
      }
    },
    onEvent: (e) => {
      if (e.type === 'rejected') log.warn(`the coordinator refused this node: ${e.code}: ${e.message}`)
      else if (e.type === 'retrying')
        log.info(`coordinator ${client.url}: ${e.reason}; retrying in ${Math.round(e.delayMs)} ms`)
    },
  })
  const registered = connection.registered.then(
    (r) => {
      log.info(
        `registered with ${client.url} as ${serial} (${r.status}, trust ${r.trust_level}${r.reason ? `: ${r.reason}` : ''})`,
      )
      return true
    },
    (error) => {
      log.warn(
        `not registered with ${client.url}: ${(error as Error).message} — peers must pin this node's key another way`,
      )
      return false
    },
  )
  return { connection, registered }
}

/** Pins first; for a serial with no pin, the coordinator's attested key is pinned, then checked like any pin. */
export function authorizeByPinsOrCoordinator(pins: PinStore, client: CoordinatorClient): Authorizer {
  const byPins = authorizeByPins(pins)
  return async (serial, key) => {
    const local = byPins(serial, key)
    if (local !== 'not-pinned') return local
    try {
      log.info((await client.pinPeerKey(serial)).message)
    } catch (error) {
      // the coordinator answers only for this token's own account: a node of another account is 'not found' there
      const foreign = error instanceof CoordinatorError && error.code === 'E_NOT_FOUND'
      const who = peerText(serial, 80)
      refusals.line(
        serial,
        foreign
          ? `refused ${who}: ${(error as Error).message} at ${client.url} — a node registered under another account cannot join this cluster; give every node a token of the same account`
          : `no key for ${who}: ${(error as Error).message}`,
      )
      return 'not-pinned'
    }
    return byPins(serial, key)
  }
}
