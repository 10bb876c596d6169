/** The flags of `dbcluster serve`, each with the description `--help` prints. */
import { parseSize, usableMemoryBytes } from '../cluster/usable-memory.ts'
import { CIPHERS, type CipherName } from '../link/aead-channel.ts'
// serve's --peers, resolved against what `cluster setup` remembered (kept beside the flag, so serve.ts stays thin)
export { peersFromSetup } from './serve-peers.ts'

export const SERVE_ARGS = {
  model: {
    type: 'string',
    description:
      'Model folder (MLX-community layout) or hub repository ORG/NAME[@REVISION] (pulled once into the hub cache); default: a synthetic demo model created on first run. On a stage (rank ≥ 1) a folder, optional: without it the head sends the files of its layers',
    valueHint: 'DIR|REPO',
  },
  host: { type: 'string', description: 'Address to listen on (loopback by default)', default: '127.0.0.1' },
  port: { type: 'string', description: 'TCP port (0 picks a free one)', default: '8080' },
  'api-key': {
    type: 'string',
    description:
      "Require the key on every route: Authorization: Bearer KEY, or a browser's Basic prompt with KEY as the password for /dashboard (or set DBCLUSTER_API_KEY); several keys, comma-separated, are tenants whose cached prompt blocks never serve another key's requests",
  },
  'public-health': {
    type: 'boolean',
    description: 'With --api-key: GET /health stays open, answering only {status} (for load balancers)',
  },
  'max-batch': { type: 'string', description: 'Most sequences decoded together (KV slots)', default: '8' },
  'max-queue': {
    type: 'string',
    description: 'Most requests waiting for a slot; beyond it requests get 429',
    default: '64',
  },
  'max-context': {
    type: 'string',
    description: 'Tokens of KV cache per sequence (prompt + completion)',
    default: '4096',
  },
  'prefill-chunk': {
    type: 'string',
    description: 'Most prompt tokens one request prefills per step, interleaved with decoding',
    default: '256',
  },
  'max-step-tokens': {
    type: 'string',
    description:
      'Most rows one step computes, decoding rows and prompt chunks together, several prompts sharing a step while it lasts; lower it to bound running streams’ inter-token latency while long prompts arrive (default: --max-batch + --prefill-chunk with one prompt a step, which keeps a seeded request’s tokens independent of the prompts beside it; at least --max-batch)',
    valueHint: 'N',
  },
  'request-timeout': { type: 'string', description: 'Seconds before an unfinished request fails', default: '300' },
  'idle-timeout': {
    type: 'string',
    description:
      'Seconds an HTTP connection may stay silent while idle or sending its request (1–255); lifted while its answer is computed',
    default: '30',
  },
  'max-requests-per-client': {
    type: 'string',
    description: 'HTTP requests open at once from one client address; more get 429',
    default: '128',
  },
  'model-id': { type: 'string', description: 'Model name reported by /v1/models (default: the folder name)' },
  backend: { type: 'string', description: 'Compute backend: cpu, mlx or auto', default: 'auto' },
  threads: { type: 'string', description: 'CPU threads (default: all cores)', valueHint: 'N' },
  precision: {
    type: 'string',
    description:
      'cpu backend, 4- and 8-bit weights: fast rounds activations to int8 per group (integer dot products, the default), exact keeps them in float (slower; as faithful as the weights allow; docs/backends.md §Precision)',
    default: 'fast',
    valueHint: 'fast|exact',
  },
  peers: {
    type: 'string',
    description:
      'Form a pipeline cluster: every node’s link address in rank order (host:port,host:port,…). With no list (--peers=), or left out (without --discover or --tp), the cluster `dbcluster cluster setup` remembered in $DBCLUSTER_HOME/peers.json, with this node’s rank',
    valueHint: 'LIST',
  },
  rank: {
    type: 'string',
    description: 'This node’s rank in --peers (0 = the head, which serves the API)',
    default: '0',
  },
  split: {
    type: 'string',
    description:
      'Layers per node, e.g. 18,10 (default: each node gets its share of the compute per step, or of the memory where that does not fit)',
    valueHint: 'N,N',
  },
  memory: {
    type: 'string',
    description: 'Memory this node offers the model (weights + KV), e.g. 12G (default: 75% of RAM)',
    valueHint: 'SIZE',
  },
  'prefix-cache': {
    type: 'string',
    description:
      'Memory for the KV of earlier prompts, reused by any prompt that starts with the same tokens (64-token blocks, least recently used evicted), e.g. 2G; 0 disables (default: half the memory left after weights and KV slots)',
    default: 'auto',
    valueHint: 'SIZE',
  },
  plan: {
    type: 'boolean',
    description:
      'Print the plan (layers, weights and KV per node, headroom) without loading anything, then exit; on the head of a cluster it waits for every stage to join',
  },
  'node-name': {
    type: 'string',
    description: 'This node’s serial for pins and handshakes (default: the machine serial)',
  },
  'cluster-id': {
    type: 'string',
    description: 'Cluster id bound into every handshake and frame',
    default: 'dbcluster',
  },
  cipher: {
    type: 'enum',
    options: [...CIPHERS] as CipherName[],
    description:
      'AEAD of every sealed hop (pipeline links, sealed tensor parallel); every node must name the same one, the handshake refuses a peer that does not',
    default: 'aes-256-gcm',
    valueHint: CIPHERS.join('|'),
  },
  'ping-interval': {
    type: 'string',
    description:
      'Seconds between link pings; 3 missed = peer unavailable; a lost link is retried at 0.1, 0.3 and 0.9 s, then every 2 intervals (10 s by default), each time with a fresh handshake',
    default: '5',
  },
  discover: {
    type: 'boolean',
    description:
      'Form the cluster by itself: find the nodes on the link-local (Thunderbolt) link by signed beacons, trust only pinned keys, elect ranks by address (lowest = head)',
  },
  nodes: {
    type: 'string',
    description: 'With --discover: how many nodes the cluster has, this one included',
    default: '2',
  },
  iface: {
    type: 'string',
    description: 'With --discover: the interface to use (default: the first with a 169.254/16 address, e.g. bridge0)',
    valueHint: 'NAME',
  },
  'link-port': {
    type: 'string',
    description: 'With --discover: TCP port of this node’s sealed link',
    default: '47391',
  },
  coordinator: {
    type: 'string',
    description:
      "Coordinator URL (cluster nodes): this node registers there with a signed attestation, and a peer it has no pin for is pinned from the coordinator's attested key",
    valueHint: 'URL',
  },
  rdma: {
    type: 'boolean',
    description:
      'With --coordinator: register this node as RDMA-capable (off by default; only when the capability gate passes — Apple Silicon with Thunderbolt 5 and rdma_ctl enabled — else the reason is printed)',
  },
  'mda-chain': {
    type: 'string',
    description:
      "With --coordinator: PEM file of this Mac's Apple managed device attestation (leaf first), requested by your MDM with the nonce 'dbcluster identity show' prints; a chain the coordinator verifies gives hardware trust",
    valueHint: 'FILE',
  },
  'coordinator-token': {
    type: 'string',
    description: 'API token for --coordinator (or set DBCLUSTER_COORDINATOR_TOKEN)',
  },
  tp: {
    type: 'string',
    description:
      'Tensor parallel: ranks sharing each layer; rank 0 serves the API, the others follow (over sealed sockets, or MLX distributed: see --tp-transport)',
    default: '1',
    valueHint: 'N',
  },
  'tp-rank': {
    type: 'string',
    description: "With --tp: this process's rank (0 listens on --tp-listen, the others dial --tp-peer)",
    default: '0',
    valueHint: 'R',
  },
  'tp-listen': {
    type: 'string',
    description:
      "With --tp, rank 0: where the ranks meet (loopback by default: give the cable's address for other machines)",
    default: '127.0.0.1:47200',
    valueHint: 'HOST:PORT',
  },
  'tp-peer': {
    type: 'string',
    description: "With --tp, ranks > 0: rank 0's meeting HOST:PORT",
    valueHint: 'HOST:PORT',
  },
  'tp-transport': {
    type: 'string',
    description:
      'With --tp: sealed (sockets sealed with --cipher between pinned nodes, any backend), jaccl (MLX over Thunderbolt RDMA, macOS, NOT encrypted), ring (MLX over TCP, NOT encrypted), or auto (= sealed: the MLX transports are opt-in)',
    default: 'auto',
    valueHint: 'auto|sealed|jaccl|ring',
  },
  'rdma-device': {
    type: 'string',
    description: "With --tp over jaccl: this rank's RDMA device, or one per rank with - for this rank",
    valueHint: 'NAME|LIST',
  },
  'tp-timeout': {
    type: 'string',
    description: 'With --tp: seconds to wait for the other ranks',
    default: '60',
    valueHint: 'S',
  },
  'orphan-timeout': {
    type: 'string',
    description:
      'On a stage (rank ≥ 1): seconds its head may be gone (control link closed, no new plan) before the stage exits, saying why; 0 waits for ever',
    default: '600',
    valueHint: 'S',
  },
  'resume-window': {
    type: 'string',
    description:
      'Seconds a request whose stage or tensor-parallel rank was lost waits for the ring to be rebuilt or the rank to rejoin, then resumes (re-prefilled) or fails (default: 3 ping intervals)',
    valueHint: 'S',
  },
} as const

/** --memory and --prefix-cache as a node takes them. */
export const nodeMemory = (args: { memory?: string; 'prefix-cache': string }) => ({
  usableBytes: usableMemoryBytes(args.memory),
  prefixCache:
    args['prefix-cache'] === 'auto'
      ? ('auto' as const)
      : /^\s*0+\s*$/.test(args['prefix-cache'])
        ? 0
        : parseSize(args['prefix-cache'], 'prefix-cache'),
})

/** Between reconnect attempts once the quick retries failed: 2 ping intervals (the seeds' 10 s at the default 5 s), at
 * least 0.5 s. */
export const reconnectBackoffMs = (pingIntervalMs: number): number => Math.max(500, 2 * pingIntervalMs)

/** What every sealed hop of a serving node binds (its links' and sealed tensor parallel's options): the cluster id and
 * the cipher (citty has already refused a --cipher not in CIPHERS, by name). */
export const hopSealing = (args: { 'cluster-id': string; cipher: (typeof CIPHERS)[number] }) => ({
  clusterId: args['cluster-id'],
  cipher: args.cipher,
})
