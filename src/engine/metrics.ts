/** A small Prometheus registry: counters, gauges and histograms, rendered in the text exposition format for /metrics. */
type Labels = Record<string, string>

const key = (labels: Labels) =>
  Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`)
    .join(',')

class Family {
  readonly values = new Map<string, number>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
  ) {}
  inc(labels: Labels = {}, by = 1) {
    const k = key(labels)
    this.values.set(k, (this.values.get(k) ?? 0) + by)
  }
  set(value: number, labels: Labels = {}) {
    this.values.set(key(labels), value)
  }
  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`]
    if (this.values.size === 0) lines.push(`${this.name} 0`)
    for (const [k, v] of this.values) lines.push(`${this.name}${k ? `{${k}}` : ''} ${v}`)
    return lines
  }
}

class Histogram {
  readonly counts: number[]
  sum = 0
  count = 0
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0)
  }
  observe(value: number) {
    this.sum += value
    this.count++
    this.buckets.forEach((b, i) => {
      if (value <= b) this.counts[i]!++
    })
  }
  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`))
    lines.push(
      `${this.name}_bucket{le="+Inf"} ${this.count}`,
      `${this.name}_sum ${this.sum}`,
      `${this.name}_count ${this.count}`,
    )
    return lines
  }
}

/** One histogram per label value (e.g. per stage rank). */
class HistogramFamily {
  readonly #byLabel = new Map<string, Histogram>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly label: string,
    readonly buckets: readonly number[],
  ) {}
  observe(labelValue: string, value: number) {
    let h = this.#byLabel.get(labelValue)
    if (!h) this.#byLabel.set(labelValue, (h = new Histogram(this.name, this.help, this.buckets)))
    h.observe(value)
  }
  /** Each label value with its histogram's sum and count (for the dashboard's snapshot). */
  entries(): [string, { sum: number; count: number }][] {
    return [...this.#byLabel]
  }
  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    for (const [v, h] of this.#byLabel) {
      const l = `${this.label}="${v}"`
      h.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{${l},le="${b}"} ${h.counts[i]}`))
      lines.push(
        `${this.name}_bucket{${l},le="+Inf"} ${h.count}`,
        `${this.name}_sum{${l}} ${h.sum}`,
        `${this.name}_count{${l}} ${h.count}`,
      )
    }
    return lines
  }
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const STAGE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]

export class ServingMetrics {
  readonly requests = new Family('dbcluster_requests_total', 'Requests by outcome', 'counter')
  readonly promptTokens = new Family('dbcluster_prompt_tokens_total', 'Prompt tokens processed', 'counter')
  readonly generatedTokens = new Family('dbcluster_generated_tokens_total', 'Tokens generated', 'counter')
  readonly queueDepth = new Family('dbcluster_queue_depth', 'Requests waiting for admission', 'gauge')
  readonly batchSize = new Family('dbcluster_batch_size', 'Sequences in the running batch', 'gauge')
  readonly linkErrors = new Family('dbcluster_link_errors_total', 'Link errors by peer and reason', 'counter')
  readonly ttft = new Histogram(
    'dbcluster_time_to_first_token_seconds',
    'Time from arrival to the first token',
    LATENCY_BUCKETS,
  )
  readonly interToken = new Histogram(
    'dbcluster_inter_token_seconds',
    'Time between tokens of one stream',
    LATENCY_BUCKETS,
  )
  readonly stepTime = new Histogram('dbcluster_step_seconds', 'Time of one pipeline step (all stages)', LATENCY_BUCKETS)
  readonly stageStepTime = new HistogramFamily(
    'dbcluster_stage_step_seconds',
    'Compute time of one step on each stage',
    'rank',
    STAGE_BUCKETS,
  )
  readonly hopTime = new Histogram(
    'dbcluster_hop_seconds',
    'Time of one step spent between stages (sealing, transfer, waiting)',
    STAGE_BUCKETS,
  )
  /** The same for decode steps alone (one row per sequence, no prompt chunk): the per-token cost. */
  readonly decodeStageStepTime = new HistogramFamily(
    'dbcluster_decode_stage_step_seconds',
    'Compute time of one decode-only step on each stage',
    'rank',
    STAGE_BUCKETS,
  )
  readonly decodeHopTime = new Histogram(
    'dbcluster_decode_hop_seconds',
    'Time of one decode-only step spent between stages',
    STAGE_BUCKETS,
  )
  /** Tensor parallel, on rank 0: what a step spent in the ranks' exchanges, the number to watch on a slow link. */
  readonly tpExchangeTime = new Histogram(
    'dbcluster_tp_exchange_seconds',
    'Time of one tensor-parallel step rank 0 spent in exchanges (sealing, transfer, waiting for the other ranks)',
    STAGE_BUCKETS,
  )

  /** The API's HTTP server: requests open now, the client addresses they come from, refusals, and this process's open
   * file descriptors (what a flood of connections exhausts). Set by `sample` just before each render. */
  readonly httpOpenRequests = new Family(
    'dbcluster_http_open_requests',
    'HTTP requests open now (connections with a request in flight)',
    'gauge',
  )
  readonly httpOpenClients = new Family(
    'dbcluster_http_open_clients',
    'Client addresses with a request open now',
    'gauge',
  )
  readonly httpRefused = new Family(
    'dbcluster_http_refused_total',
    'HTTP requests refused before the app, by reason',
    'counter',
  )
  readonly openFds = new Family('process_open_fds', 'Open file descriptors of this process', 'gauge')
  /** The prefix cache (engine/prefix-cache.ts): prompt tokens looked up and served from cached blocks, blocks kept now,
   * blocks evicted. */
  readonly prefixCache = {
    hitTokens: new Family(
      'dbcluster_prefix_cache_hit_tokens_total',
      'Prompt tokens whose KV came from the prefix cache',
      'counter',
    ),
    queryTokens: new Family(
      'dbcluster_prefix_cache_query_tokens_total',
      'Prompt tokens looked up in the prefix cache',
      'counter',
    ),
    blocks: new Family('dbcluster_prefix_cache_blocks', 'Blocks the prefix cache holds', 'gauge'),
    evictions: new Family('dbcluster_prefix_cache_evictions_total', 'Blocks evicted from the prefix cache', 'counter'),
  }
  /** Called before each render, to read gauges that are sampled rather than updated as they change. */
  sample: () => void = () => {}

  render(): string {
    this.sample()
    const parts = [
      this.httpOpenRequests,
      this.httpOpenClients,
      this.httpRefused,
      this.openFds,
      this.requests,
      this.promptTokens,
      this.generatedTokens,
      this.queueDepth,
      this.batchSize,
      this.linkErrors,
      this.ttft,
      this.interToken,
      this.stepTime,
      this.stageStepTime,
      this.hopTime,
      this.decodeStageStepTime,
      this.decodeHopTime,
      this.tpExchangeTime,
      ...Object.values(this.prefixCache),
    ]
    return parts.flatMap((p) => p.render()).join('\n') + '\n'
  }
}
