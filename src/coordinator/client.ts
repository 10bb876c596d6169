/** The coordinator client used by `dbcluster serve`: peer list, peer keys fetched and pinned (never re-pinned silently), verified rosters, retries, and pinned-key fallback while the coordinator is down. */
import type { KeyKind } from '../trust/identity.ts'
import type { Pin, PinStore as TrustPinStore } from '../trust/pinned-keys.ts'
import { CoordinatorError } from './errors.ts'
import type { RdmaPeer } from './gate.ts'
import { ProviderConnection, type ProviderConnectionOptions } from './provider-connection.ts'
import type { ProviderKind, ProviderStatus } from './provider-record.ts'
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.ts'
import { verifyRoster, type RosterBody, type SignedRoster } from './roster.ts'
import type { TrustLevel } from './trust-level.ts'

/** The client pins through the trust module's store; it needs only get/set (file, Keychain, a Map in tests). */
export type PeerPin = Pin
export type PinStore = Pick<TrustPinStore, 'get' | 'set'>

export interface PeerKey {
  serial: string
  public_key: string
  key_kind: KeyKind
  trust_level: TrustLevel
  /** Why the level is lower than the key's claim (a Secure Enclave claim without verified evidence), or null. */
  trust_reason?: string | null
  /** An Apple managed device attestation chain was verified for this serial and key. */
  mda_verified?: boolean
  attested: boolean
  kind: ProviderKind
  status: ProviderStatus
}

/** Where a peer's key came from this time; `coordinator: 'unreachable'` is the degraded mode the caller should log. */
export interface ResolvedPeerKey {
  serial: string
  publicKey: Uint8Array
  keyKind: KeyKind
  source: 'coordinator' | 'pin'
  coordinator: 'reachable' | 'unreachable'
  /** new: pinned now; unchanged: the coordinator confirmed the pin; pinned-only: the coordinator could not be asked. */
  pin: 'new' | 'unchanged' | 'pinned-only'
  message: string
}

export interface CoordinatorClientOptions {
  /** http(s)://host:port of the coordinator. */
  url: string
  token: string
  pins?: PinStore
  /** The coordinator's key as its operator published it (fingerprint printed at start). Without it, the first one seen is pinned. */
  coordinatorKey?: Uint8Array
  retry?: RetryPolicy
  fetch?: (input: string, init?: RequestInit) => Promise<Response>
  sleep?: (ms: number) => Promise<void>
  now?: () => number
  onRetry?: (what: string, attempt: number, delayMs: number, error: unknown) => void
}

const fromB64 = (text: string) => new Uint8Array(Buffer.from(text, 'base64'))

/** Network failures and 5xx/429 are worth retrying; a 4xx answer will not change. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof CoordinatorError)
    return (
      error.code === 'E_COORDINATOR_UNREACHABLE' ||
      (error.status !== undefined && (error.status >= 500 || error.status === 429))
    )
  return false
}

export class CoordinatorClient {
  readonly url: string
  readonly #o: CoordinatorClientOptions
  #coordinatorKey: Uint8Array | undefined

  constructor(options: CoordinatorClientOptions) {
    this.#o = options
    this.url = options.url.replace(/\/+$/, '').replace(/^ws(s?):/, 'http$1:')
    this.#coordinatorKey = options.coordinatorKey
  }

  get #pinName(): string {
    return `coordinator@${new URL(this.url).host}`
  }

  /** One API call with retries; errors become CoordinatorError with the server's code and status. */
  async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const doFetch = this.#o.fetch ?? fetch
    return withRetry(
      async () => {
        let response: Response
        try {
          response = await doFetch(`${this.url}${path}`, {
            ...init,
            headers: {
              authorization: `Bearer ${this.#o.token}`,
              ...(init.body ? { 'content-type': 'application/json' } : {}),
              ...init.headers,
            },
            signal: init.signal ?? AbortSignal.timeout(10_000),
          })
        } catch (error) {
          throw new CoordinatorError(
            'E_COORDINATOR_UNREACHABLE',
            `coordinator ${this.url} unreachable: ${error instanceof Error ? error.message : String(error)}`,
          )
        }
        const text = await response.text()
        let body: unknown
        try {
          body = text ? JSON.parse(text) : undefined
        } catch {
          throw new CoordinatorError(
            'E_COORDINATOR_RESPONSE',
            `coordinator answered ${response.status} with non-JSON`,
            undefined,
            response.status,
          )
        }
        if (!response.ok) {
          const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error
          const code = (e?.code ?? 'E_COORDINATOR_RESPONSE') as ConstructorParameters<typeof CoordinatorError>[0]
          throw new CoordinatorError(
            code,
            e?.message ?? `coordinator answered ${response.status}`,
            undefined,
            response.status,
          )
        }
        return body as T
      },
      this.#o.retry ?? DEFAULT_RETRY,
      { sleep: this.#o.sleep, isRetryable, onRetry: (n, ms, e) => this.#o.onRetry?.(path, n, ms, e) },
    )
  }

  rdmaPeers(): Promise<RdmaPeer[]> {
    return this.request<{ peers: RdmaPeer[] }>('/v1/cluster/rdma-peers').then((r) => r.peers)
  }

  peerKey(serial: string): Promise<PeerKey> {
    return this.request<PeerKey>(`/v1/cluster/peer-key?serial=${encodeURIComponent(serial)}`)
  }

  /**
   * Fetches a peer's key and pins it: only attested keys, and a key that differs from the pin is an error, never a re-pin.
   * When the coordinator cannot be reached, an existing pin is used and the result says so.
   */
  async pinPeerKey(serial: string): Promise<ResolvedPeerKey> {
    const pins = this.#o.pins
    const pinned = pins?.get(serial)
    let info: PeerKey
    try {
      info = await this.peerKey(serial)
    } catch (error) {
      if (!(error instanceof CoordinatorError && error.code === 'E_COORDINATOR_UNREACHABLE')) throw error
      if (!pinned)
        throw new CoordinatorError(
          'E_COORDINATOR_UNREACHABLE',
          `${error.message}; no key pinned for ${serial}`,
          'start the coordinator, or pin the key from a roster',
        )
      return {
        serial,
        publicKey: fromB64(pinned.publicKey),
        keyKind: pinned.keyKind,
        source: 'pin',
        coordinator: 'unreachable',
        pin: 'pinned-only',
        message: `coordinator unreachable: using the key pinned for ${serial} on ${new Date(pinned.pinnedAt).toISOString()}`,
      }
    }
    if (!info.attested || info.trust_level === 'none') {
      throw new CoordinatorError(
        'E_PEER_NOT_ATTESTED',
        `the coordinator does not vouch for ${serial} (attested: ${info.attested}, status: ${info.status})`,
        'the peer must register with a valid attestation',
      )
    }
    if (pinned && pinned.publicKey !== info.public_key) {
      throw new CoordinatorError(
        'E_PIN_MISMATCH',
        `the coordinator's key for ${serial} differs from the one pinned on ${new Date(pinned.pinnedAt).toISOString()}`,
        'keys are never re-pinned silently: remove the pin by hand if the machine really has a new key',
      )
    }
    if (!pinned)
      pins?.set(serial, {
        publicKey: info.public_key,
        keyKind: info.key_kind,
        source: 'coordinator',
        pinnedAt: (this.#o.now ?? Date.now)(),
      })
    return {
      serial,
      publicKey: fromB64(info.public_key),
      keyKind: info.key_kind,
      source: 'coordinator',
      coordinator: 'reachable',
      pin: pinned ? 'unchanged' : 'new',
      message: pinned
        ? `coordinator confirmed the key pinned for ${serial}`
        : `pinned ${serial}'s key (trust ${info.trust_level})`,
    }
  }

  /** The key rosters must be signed with: the configured one, else the pinned one, else the first one seen (then pinned). */
  async coordinatorKey(): Promise<Uint8Array> {
    if (this.#coordinatorKey) return this.#coordinatorKey
    const pinned = this.#o.pins?.get(this.#pinName)
    if (pinned) return (this.#coordinatorKey = fromB64(pinned.publicKey))
    const { public_key } = await this.request<{ public_key: string }>('/v1/coordinator')
    this.#coordinatorKey = fromB64(public_key)
    this.#o.pins?.set(this.#pinName, {
      publicKey: public_key,
      keyKind: 'software',
      source: 'coordinator',
      pinnedAt: (this.#o.now ?? Date.now)(),
    })
    return this.#coordinatorKey
  }

  /** Verifies a roster (from the coordinator or relayed by a head); throws E_ROSTER_REJECTED when tampered, foreign or expired. */
  async verifyRoster(roster: unknown): Promise<RosterBody> {
    const verdict = verifyRoster(roster, await this.coordinatorKey(), { now: (this.#o.now ?? Date.now)() })
    if (!verdict.ok)
      throw new CoordinatorError('E_ROSTER_REJECTED', verdict.reason, 'ask the coordinator for a new roster')
    return verdict.body
  }

  /** Asks the coordinator to sign a roster for these members (the first is the head, one of this account's providers) and verifies it. */
  async createRoster(members: string[], ttlSeconds?: number): Promise<{ roster: SignedRoster; body: RosterBody }> {
    const roster = await this.request<SignedRoster>('/v1/cluster/roster', {
      method: 'POST',
      body: JSON.stringify({ members, ...(ttlSeconds ? { ttl_seconds: ttlSeconds } : {}) }),
    })
    return { roster, body: await this.verifyRoster(roster) }
  }

  /** Opens the provider socket: registers (a fresh message per connection), heartbeats, reconnects with backoff. */
  connectProvider(options: Omit<ProviderConnectionOptions, 'url' | 'token'>): ProviderConnection {
    return new ProviderConnection({
      retry: this.#o.retry,
      sleep: this.#o.sleep,
      ...options,
      url: this.url,
      token: this.#o.token,
    })
  }
}
