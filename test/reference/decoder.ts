/** An independent float64 decoder forward for llama / qwen2 / qwen3 / gemma3, written from the architectures' definitions
 * (mlx-lm llama.py, qwen2.py, qwen3.py, gemma3_text.py): no model code from src/, only the safetensors reader. Slow and
 * simple on purpose. */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readSafetensorsHeader, tensorBytes } from '../../src/model/safetensors.ts'
import { causalConv, dequantize, dequantizeMxfp4, gatedDelta, geluTanh, roundBf16, swigluClipped } from './kernels.ts'

/** mlx-lm gemma3_text ModelArgs defaults (keys a config may omit). */
const GEMMA3_DEFAULTS = {
  num_attention_heads: 4,
  head_dim: 256,
  num_key_value_heads: 1,
  vocab_size: 262144,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  query_pre_attn_scalar: 256,
  sliding_window: 512,
  sliding_window_pattern: 6,
  rms_norm_eps: 1e-6,
}

/** Rounds a value to a stored float dtype (MLX computes in the weights' dtype there). */
function roundTo(dtype: string, v: number): number {
  if (dtype === 'bf16') return roundBf16(v)
  if (dtype === 'f16') return Number(new Float16Array([v])[0])
  if (dtype === 'f32') return Math.fround(v)
  return v
}

type Mat = { rows: number; cols: number; v: Float64Array }

function values(dtype: string, bytes: Uint8Array): Float64Array {
  const copy = bytes.slice()
  if (dtype === 'f32') return Float64Array.from(new Float32Array(copy.buffer))
  if (dtype === 'f16') return Float64Array.from(new Float16Array(copy.buffer), Number)
  const u16 = new Uint16Array(copy.buffer)
  const f = new Float32Array(u16.length)
  const u32 = new Uint32Array(f.buffer)
  for (let i = 0; i < u16.length; i++) u32[i] = u16[i]! << 16
  return Float64Array.from(f)
}

export class ReferenceDecoder {
  readonly c: Record<string, any>
  readonly #t = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>()

  constructor(dir: string) {
    this.c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    const index = join(dir, 'model.safetensors.index.json')
    const files = existsSync(index)
      ? [...new Set(Object.values(JSON.parse(readFileSync(index, 'utf8')).weight_map as Record<string, string>))]
      : readdirSync(dir).filter((f) => f.endsWith('.safetensors'))
    for (const f of files) {
      for (const e of readSafetensorsHeader(join(dir, f)).entries)
        this.#t.set(e.name, { dtype: e.dtype, shape: e.shape, bytes: tensorBytes(e) })
    }
  }

  vec(name: string): Float64Array {
    const t = this.#t.get(name)!
    return values(t.dtype, t.bytes)
  }

  readonly #mats = new Map<string, Mat>()

  /** A weight matrix in float64, dequantized once and kept (the embedding is read for every call). */
  mat(name: string): Mat {
    let m = this.#mats.get(name)
    if (!m) this.#mats.set(name, (m = this.#load(name)))
    return m
  }

  #load(name: string): Mat {
    const w = this.#t.get(`${name}.weight`)!
    // MLX rule: quantized when the module's path is listed in `quantization` (false = float) or its .scales exist; a
    // listed module uses its own params (mode affine unless it says otherwise), the others the global ones
    const quant = this.c.quantization ?? {}
    const own = quant[name]
    // rows: every leading axis (stacked experts [E, out, in] read as [E·out, in])
    const rows = w.shape.slice(0, -1).reduce((a, d) => a * d, 1)
    if (own === false || (own === undefined && !this.#t.has(`${name}.scales`)))
      return { rows, cols: w.shape.at(-1)!, v: values(w.dtype, w.bytes) }
    const q = own
      ? { bits: own.bits, group_size: own.group_size, mode: own.mode ?? 'affine' }
      : { bits: quant.bits, group_size: quant.group_size, mode: quant.mode ?? 'affine' }
    const cols = (w.shape.at(-1)! * 32) / q.bits
    const words = new Uint32Array(w.bytes.slice().buffer)
    if (q.mode === 'mxfp4')
      return { rows, cols, v: dequantizeMxfp4(words, this.#t.get(`${name}.scales`)!.bytes.slice(), rows, cols) }
    return {
      rows,
      cols,
      v: dequantize(words, this.vec(`${name}.scales`), this.vec(`${name}.biases`), rows, cols, q.group_size, q.bits),
    }
  }

  /** One expert's rows [out, in] of a stacked [E, out, in] matrix. */
  expert(name: string, e: number): Mat {
    const all = this.mat(name)
    const E = this.#t.get(`${name}.weight`)!.shape[0]!
    const rows = all.rows / E
    return { rows, cols: all.cols, v: all.v.subarray(e * rows * all.cols, (e + 1) * rows * all.cols) }
  }

  /** Gemma 4 (mlx-lm gemma4_text.py) without KV sharing or per-layer inputs: sliding layers (default RoPE over head_dim)
   * and full layers (global_head_dim, proportional RoPE, keys as values with attention_k_eq_v), q/k norms and an
   * unweighted v norm, unscaled scores, four norms per block plus the routed GeGLU experts when enabled, layer_scalar,
   * embedding × √hidden and tanh soft-capped logits. */
  #gemma4Logits(tokens: number[], positions: number[]): Float64Array[] {
    const top = this.c
    const nested = top.model_type === 'gemma4'
    const c: Record<string, any> = {
      head_dim: 256,
      global_head_dim: 512,
      rms_norm_eps: 1e-6,
      num_key_value_heads: 1,
      sliding_window: 512,
      sliding_window_pattern: 5,
      final_logit_softcapping: 30,
      tie_word_embeddings: true,
      ...(nested ? { num_attention_heads: 8, ...top.text_config, vocab_size: top.vocab_size ?? 262144 } : top),
    }
    const R = nested ? 'language_model.' : ''
    const L = c.num_hidden_layers,
      H = c.num_attention_heads,
      hidden = c.hidden_size,
      eps = c.rms_norm_eps
    const types: string[] =
      c.layer_types ??
      Array.from({ length: L }, (_, i) =>
        (i + 1) % c.sliding_window_pattern === 0 ? 'full_attention' : 'sliding_attention',
      )
    const rp = c.rope_parameters ?? {}
    const embed = this.mat(`${R}model.embed_tokens`)
    const table = this.#t.get(`${R}model.embed_tokens.scales`) ?? this.#t.get(`${R}model.embed_tokens.weight`)!
    const embedScale = roundTo(table.dtype, Math.sqrt(hidden))
    let h = tokens.map((t) =>
      embed.v.slice(t * hidden, (t + 1) * hidden).map((v) => roundTo(table.dtype, v * embedScale)),
    )
    const ones = (n: number) => new Float64Array(n).fill(1)
    for (let l = 0; l < L; l++) {
      const p = `${R}model.layers.${l}`
      const sliding = types[l] === 'sliding_attention'
      const D = sliding ? c.head_dim : c.global_head_dim
      const kEqV = !sliding && Boolean(c.attention_k_eq_v)
      const KH = kEqV && c.num_global_key_value_heads != null ? c.num_global_key_value_heads : c.num_key_value_heads
      const ropeP =
        (sliding ? rp.sliding_attention : rp.full_attention) ??
        (sliding ? { rope_theta: 10000 } : { rope_theta: 1e6, partial_rotary_factor: 0.25, rope_type: 'proportional' })
      const proportional = (ropeP.rope_type ?? ropeP.type) === 'proportional'
      const rotated = proportional ? Math.trunc(D * (ropeP.partial_rotary_factor ?? 1)) : D
      // pairs (i, i + D/2); a proportional rope turns only the first rotated/2 pairs, at periods factor·θ^(2i/D)
      const invFreq = Array.from({ length: D / 2 }, (_, i) =>
        i < rotated / 2 ? 1 / ((ropeP.factor ?? 1) * ropeP.rope_theta ** ((2 * i) / D)) : 0,
      )
      const rotate = (r: Float64Array, heads: number, pos: number) => {
        for (let hh = 0; hh < heads; hh++)
          for (let i = 0; i < D / 2; i++) {
            const th = pos * invFreq[i]!,
              a = r[hh * D + i]!,
              b = r[hh * D + i + D / 2]!
            r[hh * D + i] = a * Math.cos(th) - b * Math.sin(th)
            r[hh * D + i + D / 2] = a * Math.sin(th) + b * Math.cos(th)
          }
      }
      const perHead = (r: Float64Array, heads: number, w: Float64Array) => {
        const out = new Float64Array(heads * D)
        for (let hh = 0; hh < heads; hh++) out.set(rms(r.slice(hh * D, (hh + 1) * D), w, eps), hh * D)
        return out
      }
      const x = h.map((r) => rms(r, this.vec(`${p}.input_layernorm.weight`), eps))
      const s = `${p}.self_attn`
      const q = x.map((r) => perHead(mv(this.mat(`${s}.q_proj`), r), H, this.vec(`${s}.q_norm.weight`)))
      const rawK = x.map((r) => mv(this.mat(`${s}.k_proj`), r))
      const k = rawK.map((r) => perHead(r, KH, this.vec(`${s}.k_norm.weight`)))
      const v = (kEqV ? rawK : x.map((r) => mv(this.mat(`${s}.v_proj`), r))).map((r) => perHead(r, KH, ones(D)))
      q.forEach((r, t) => rotate(r, H, positions[t] ?? t))
      k.forEach((r, t) => rotate(r, KH, positions[t] ?? t))
      const window = sliding ? c.sliding_window : Infinity
      const attn = q.map((qr, t) => {
        const out = new Float64Array(H * D)
        const first = Math.max(0, t - window + 1)
        for (let hh = 0; hh < H; hh++) {
          const g = Math.floor(hh / (H / KH))
          const scores: number[] = []
          for (let j = first; j <= t; j++) {
            let dot = 0
            for (let d = 0; d < D; d++) dot += qr[hh * D + d]! * k[j]![g * D + d]!
            scores.push(dot)
          }
          const m = Math.max(...scores)
          const e = scores.map((sc) => Math.exp(sc - m))
          const z = e.reduce((a, b) => a + b, 0)
          for (let j = first; j <= t; j++)
            for (let d = 0; d < D; d++) out[hh * D + d]! += (e[j - first]! / z) * v[j]![g * D + d]!
        }
        return out
      })
      h = h.map((r, t) =>
        add(r, rms(mv(this.mat(`${s}.o_proj`), attn[t]!), this.vec(`${p}.post_attention_layernorm.weight`), eps)),
      )
      const geglu = (m: string, xx: Float64Array, e?: number) => {
        const pick = (n: string) => (e === undefined ? this.mat(`${m}.${n}`) : this.expert(`${m}.${n}`, e))
        const g = mv(pick('gate_proj'), xx),
          u = mv(pick('up_proj'), xx)
        return mv(
          pick('down_proj'),
          g.map((gv, i) => geluTanh(gv) * u[i]!),
        )
      }
      const scalar = this.vec(`${p}.layer_scalar`)[0]!
      h = h.map((r) => {
        let f = geglu(`${p}.mlp`, rms(r, this.vec(`${p}.pre_feedforward_layernorm.weight`), eps))
        if (c.enable_moe_block) {
          const scaleT = this.#t.get(`${p}.router.scale`)!
          const routerNorm = this.vec(`${p}.router.scale`).map((v) => roundTo(scaleT.dtype, v * hidden ** -0.5))
          const scores = mv(this.mat(`${p}.router.proj`), rms(r, routerNorm, eps))
          const topk = Array.from(scores, (val, e) => [val, e] as const)
            .sort((a, b) => b[0] - a[0])
            .slice(0, c.top_k_experts)
          const mx = topk[0]![0]
          const z = topk.reduce((acc, [val]) => acc + Math.exp(val - mx), 0)
          const perExpert = this.vec(`${p}.router.per_expert_scale`)
          const xx = rms(r, this.vec(`${p}.pre_feedforward_layernorm_2.weight`), eps)
          let y = new Float64Array(hidden)
          for (const [val, e] of topk) {
            const w = (Math.exp(val - mx) / z) * perExpert[e]!
            const out = geglu(`${p}.experts.switch_glu`, xx, e)
            y = y.map((acc, i) => acc + w * out[i]!)
          }
          f = add(
            rms(f, this.vec(`${p}.post_feedforward_layernorm_1.weight`), eps),
            rms(y, this.vec(`${p}.post_feedforward_layernorm_2.weight`), eps),
          )
        }
        return add(r, rms(f, this.vec(`${p}.post_feedforward_layernorm.weight`), eps)).map((val) => val * scalar)
      })
    }
    const head = c.tie_word_embeddings ? embed : this.mat(`${R}lm_head`)
    const norm = this.vec(`${R}model.norm.weight`)
    const cap = c.final_logit_softcapping
    return h.map((r) => mv(head, rms(r, norm, eps)).map((v) => (cap ? Math.tanh(v / cap) * cap : v)))
  }

  /** Qwen3.5 (mlx-lm qwen3_5.py, qwen3_next.py, gated_delta.py): every full_attention_interval-th layer gated full
   * attention with partial RoPE, the others Gated DeltaNet (causal conv → SiLU → normalised q/k → delta rule → gated
   * RMSNorm), SwiGLU MLPs; tensors under language_model. */
  #qwen35Logits(tokens: number[], positions: number[]): Float64Array[] {
    const c: Record<string, any> = {
      full_attention_interval: 4,
      linear_conv_kernel_dim: 4,
      rms_norm_eps: 1e-6,
      ...(this.c.text_config ?? this.c),
    }
    const R = 'language_model.'
    const H = c.num_attention_heads,
      KH = c.num_key_value_heads,
      hidden = c.hidden_size,
      D = c.head_dim ?? hidden / H,
      eps = c.rms_norm_eps
    const Hk = c.linear_num_key_heads,
      Hv = c.linear_num_value_heads,
      Dk = c.linear_key_head_dim,
      Dv = c.linear_value_head_dim,
      K = c.linear_conv_kernel_dim
    const rope = c.rope_parameters ?? {}
    const rotDims = Math.trunc(D * (c.partial_rotary_factor ?? rope.partial_rotary_factor ?? 0.25))
    const theta = c.rope_theta ?? rope.rope_theta ?? 100000
    const invFreq = Array.from({ length: rotDims / 2 }, (_, i) => theta ** ((-2 * i) / rotDims))
    const ones = (n: number) => new Float64Array(n).fill(1)
    const embed = this.mat(`${R}model.embed_tokens`)
    let h = tokens.map((t) => embed.v.slice(t * hidden, (t + 1) * hidden))
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const p = `${R}model.layers.${l}`
      const x = h.map((r) => rms(r, this.vec(`${p}.input_layernorm.weight`), eps))
      let mixed: Float64Array[]
      if ((l + 1) % c.full_attention_interval !== 0) {
        const a = `${p}.linear_attn`
        const kd = Hk * Dk,
          vd = Hv * Dv
        const qkv = x.map((r) => Array.from(mv(this.mat(`${a}.in_proj_qkv`), r)))
        const conv = causalConv(qkv, this.vec(`${a}.conv1d.weight`), K).map((r) => r.map((v) => v / (1 + Math.exp(-v))))
        const perHead = (r: number[], from: number, heads: number, d: number, scale: number) =>
          Array.from({ length: heads }, (_, hh) =>
            Array.from(rms(Float64Array.from(r.slice(from + hh * d, from + (hh + 1) * d)), ones(d), 1e-6)).map(
              (v) => v * scale,
            ),
          ).flat()
        const q = conv.map((r) => perHead(r, 0, Hk, Dk, 1 / Dk))
        const k = conv.map((r) => perHead(r, kd, Hk, Dk, Dk ** -0.5))
        const v = conv.map((r) => r.slice(2 * kd, 2 * kd + vd))
        const av = x.map((r) => Array.from(mv(this.mat(`${a}.in_proj_a`), r)))
        const bv = x.map((r) => Array.from(mv(this.mat(`${a}.in_proj_b`), r)))
        const y = gatedDelta(q, k, v, av, bv, this.vec(`${a}.A_log`), this.vec(`${a}.dt_bias`), Hk, Hv, Dk, Dv)
        const norm = this.vec(`${a}.norm.weight`)
        mixed = x.map((r, t) => {
          const z = mv(this.mat(`${a}.in_proj_z`), r)
          const gated = new Float64Array(vd)
          for (let hh = 0; hh < Hv; hh++) {
            const n = rms(Float64Array.from(y[t]!.slice(hh * Dv, (hh + 1) * Dv)), norm, eps)
            for (let d = 0; d < Dv; d++) {
              const zz = z[hh * Dv + d]!
              gated[hh * Dv + d] = (zz / (1 + Math.exp(-zz))) * n[d]!
            }
          }
          return mv(this.mat(`${a}.out_proj`), gated)
        })
      } else {
        const s = `${p}.self_attn`
        const qn = this.vec(`${s}.q_norm.weight`),
          kn = this.vec(`${s}.k_norm.weight`)
        const qg = x.map((r) => mv(this.mat(`${s}.q_proj`), r))
        const q = qg.map((r) => {
          const out = new Float64Array(H * D)
          for (let hh = 0; hh < H; hh++) out.set(rms(r.slice(hh * 2 * D, hh * 2 * D + D), qn, eps), hh * D)
          return out
        })
        const gate = qg.map((r) => {
          const out = new Float64Array(H * D)
          for (let hh = 0; hh < H; hh++) out.set(r.slice(hh * 2 * D + D, (hh + 1) * 2 * D), hh * D)
          return out
        })
        const k = x.map((r) => {
          const kk = mv(this.mat(`${s}.k_proj`), r)
          for (let hh = 0; hh < KH; hh++) kk.set(rms(kk.slice(hh * D, (hh + 1) * D), kn, eps), hh * D)
          return kk
        })
        const v = x.map((r) => mv(this.mat(`${s}.v_proj`), r))
        const rotate = (r: Float64Array, heads: number, pos: number) => {
          for (let hh = 0; hh < heads; hh++)
            for (let i = 0; i < rotDims / 2; i++) {
              const th = pos * invFreq[i]!,
                a = r[hh * D + i]!,
                b = r[hh * D + i + rotDims / 2]!
              r[hh * D + i] = a * Math.cos(th) - b * Math.sin(th)
              r[hh * D + i + rotDims / 2] = a * Math.sin(th) + b * Math.cos(th)
            }
        }
        q.forEach((r, t) => rotate(r, H, positions[t] ?? t))
        k.forEach((r, t) => rotate(r, KH, positions[t] ?? t))
        mixed = q.map((qr, t) => {
          const out = new Float64Array(H * D)
          for (let hh = 0; hh < H; hh++) {
            const g = Math.floor(hh / (H / KH))
            const scores = Array.from({ length: t + 1 }, (_, j) => {
              let dot = 0
              for (let d = 0; d < D; d++) dot += qr[hh * D + d]! * k[j]![g * D + d]!
              return dot / Math.sqrt(D)
            })
            const m = Math.max(...scores)
            const e = scores.map((sc) => Math.exp(sc - m))
            const z = e.reduce((acc, b) => acc + b, 0)
            for (let j = 0; j <= t; j++) for (let d = 0; d < D; d++) out[hh * D + d]! += (e[j]! / z) * v[j]![g * D + d]!
          }
          // output gate: σ(gate) per element
          return mv(
            this.mat(`${s}.o_proj`),
            out.map((o, i) => o / (1 + Math.exp(-gate[t]![i]!))),
          )
        })
      }
      h = h.map((r, t) => add(r, mixed[t]!))
      const silu = (v: number) => v / (1 + Math.exp(-v))
      const swiglu = (m: string, xx: Float64Array, e?: number) => {
        const pick = (n: string) => (e === undefined ? this.mat(`${m}.${n}`) : this.expert(`${m}.${n}`, e))
        const g = mv(pick('gate_proj'), xx),
          u = mv(pick('up_proj'), xx)
        return mv(
          pick('down_proj'),
          g.map((gv, i) => silu(gv) * u[i]!),
        )
      }
      h = h.map((r) => {
        const xx = rms(r, this.vec(`${p}.post_attention_layernorm.weight`), eps)
        if (!(c.num_experts > 0)) return add(r, swiglu(`${p}.mlp`, xx))
        // sparse MoE: softmax over every expert, the top k (renormalised when norm_topk_prob), plus σ(gate)·shared expert
        const logits = mv(this.mat(`${p}.mlp.gate`), xx)
        const mx = Math.max(...logits)
        const probs = logits.map((v) => Math.exp(v - mx))
        const total = probs.reduce((a, b) => a + b, 0)
        const top = Array.from(probs, (pr, e) => [pr / total, e] as const)
          .sort((a, b) => b[0] - a[0])
          .slice(0, c.num_experts_per_tok)
        const norm = (c.norm_topk_prob ?? true) ? top.reduce((a, [pr]) => a + pr, 0) : 1
        let y = new Float64Array(hidden)
        for (const [pr, e] of top) {
          const out = swiglu(`${p}.mlp.switch_mlp`, xx, e)
          y = y.map((acc, i) => acc + (pr / norm) * out[i]!)
        }
        const gate = 1 / (1 + Math.exp(-mv(this.mat(`${p}.mlp.shared_expert_gate`), xx)[0]!))
        const shared = swiglu(`${p}.mlp.shared_expert`, xx)
        return add(
          r,
          y.map((v, i) => v + gate * shared[i]!),
        )
      })
    }
    const tied = c.tie_word_embeddings ?? this.c.tie_word_embeddings
    const head = tied ? embed : this.mat(`${R}lm_head`)
    const norm = this.vec(`${R}model.norm.weight`)
    return h.map((r) => mv(head, rms(r, norm, eps)))
  }

  /** GPT-OSS (mlx-lm gpt_oss.py): biased attention with per-head sinks, yarn RoPE (q, k × mscale), sliding / full layers,
   * a top-k mixture of clipped-SwiGLU experts weighted by the softmax of the k router logits; untied head. */
  #gptOssLogits(tokens: number[], positions: number[]): Float64Array[] {
    const c: Record<string, any> = {
      num_local_experts: 128,
      num_experts_per_tok: 4,
      sliding_window: 128,
      rms_norm_eps: 1e-5,
      ...this.c,
    }
    const H = c.num_attention_heads,
      KH = c.num_key_value_heads,
      hidden = c.hidden_size,
      D = c.head_dim,
      eps = c.rms_norm_eps
    const L = c.num_hidden_layers,
      k = c.num_experts_per_tok
    const types: string[] =
      c.layer_types ?? Array.from({ length: L }, (_, i) => (i % 2 ? 'full_attention' : 'sliding_attention'))
    const embed = this.mat('model.embed_tokens')
    let h = tokens.map((t) => embed.v.slice(t * hidden, (t + 1) * hidden))
    const invFreq = this.#invFreq()
    const rs = c.rope_scaling
    const yarnM = (scale: number, m: number) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1)
    const mscale =
      rs?.rope_type === 'yarn' ? yarnM(rs.factor, rs.mscale ?? 1) / yarnM(rs.factor, rs.mscale_all_dim ?? 0) : 1
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}`
      const window = types[l] === 'sliding_attention' ? c.sliding_window : Infinity
      const x = h.map((r) => rms(r, this.vec(`${p}.input_layernorm.weight`), eps))
      const proj = (n: string) =>
        x.map((r) => mv(this.mat(`${p}.self_attn.${n}`), r, this.vec(`${p}.self_attn.${n}.bias`)))
      const q = proj('q_proj').map((r) => r.map((v) => v * mscale))
      const kk = proj('k_proj').map((r) => r.map((v) => v * mscale))
      const v = proj('v_proj')
      q.forEach((r, t) => rotate(r, H, D, positions[t] ?? t, invFreq))
      kk.forEach((r, t) => rotate(r, KH, D, positions[t] ?? t, invFreq))
      const sinks = this.vec(`${p}.self_attn.sinks`)
      const attn = q.map((qr, t) => {
        const out = new Float64Array(H * D)
        const first = Math.max(0, t - window + 1)
        for (let hh = 0; hh < H; hh++) {
          const g = Math.floor(hh / (H / KH))
          const scores: number[] = []
          for (let j = first; j <= t; j++) {
            let dot = 0
            for (let d = 0; d < D; d++) dot += qr[hh * D + d]! * kk[j]![g * D + d]!
            scores.push(dot / Math.sqrt(D))
          }
          // the sink is one more logit in the softmax's denominator, attending to nothing
          const m = Math.max(sinks[hh]!, ...scores)
          const e = scores.map((sc) => Math.exp(sc - m))
          const z = e.reduce((a, b) => a + b, 0) + Math.exp(sinks[hh]! - m)
          for (let j = first; j <= t; j++)
            for (let d = 0; d < D; d++) out[hh * D + d]! += (e[j - first]! / z) * v[j]![g * D + d]!
        }
        return out
      })
      const o = this.mat(`${p}.self_attn.o_proj`),
        oBias = this.vec(`${p}.self_attn.o_proj.bias`)
      h = h.map((r, t) => add(r, mv(o, attn[t]!, oBias)))
      const router = this.mat(`${p}.mlp.router`),
        routerBias = this.vec(`${p}.mlp.router.bias`)
      const biasOf = (n: string, e: number, size: number) =>
        this.vec(`${p}.mlp.experts.${n}.bias`).subarray(e * size, (e + 1) * size)
      h = h.map((r) => {
        const xx = rms(r, this.vec(`${p}.post_attention_layernorm.weight`), eps)
        const logits = mv(router, xx, routerBias)
        const top = Array.from(logits, (val, e) => [val, e] as const)
          .sort((a, b) => b[0] - a[0])
          .slice(0, k)
        const mx = top[0]![0]
        const z = top.reduce((a, [val]) => a + Math.exp(val - mx), 0)
        let y = new Float64Array(hidden)
        for (const [val, e] of top) {
          const gate = mv(this.expert(`${p}.mlp.experts.gate_proj`, e), xx, biasOf('gate_proj', e, c.intermediate_size))
          const up = mv(this.expert(`${p}.mlp.experts.up_proj`, e), xx, biasOf('up_proj', e, c.intermediate_size))
          const down = mv(
            this.expert(`${p}.mlp.experts.down_proj`, e),
            gate.map((g, i) => swigluClipped(g, up[i]!)),
            biasOf('down_proj', e, hidden),
          )
          const weight = Math.exp(val - mx) / z
          y = y.map((acc, i) => acc + weight * down[i]!)
        }
        return add(r, y)
      })
    }
    const head = c.tie_word_embeddings ? embed : this.mat('lm_head')
    const norm = this.vec('model.norm.weight')
    return h.map((r) => mv(head, rms(r, norm, eps)))
  }

  /** The text model's config (a multimodal gemma3 nests it under text_config) with mlx-lm's defaults for gemma3. */
  get text(): Record<string, any> {
    const c = this.c
    if (c.model_type === 'gemma3')
      return {
        ...GEMMA3_DEFAULTS,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        ...c.text_config,
        vocab_size: c.vocab_size ?? 262208,
        quantization: c.quantization,
        model_type: 'gemma3_text',
      }
    if (c.model_type === 'gemma3_text') return { ...GEMMA3_DEFAULTS, ...c }
    return c
  }

  /** Tensor-name root: the text tower of a multimodal checkpoint lives under language_model. */
  get root(): string {
    return this.c.model_type === 'gemma3' ? 'language_model.' : ''
  }

  /** A norm weight as the model applies it: Gemma scales by 1 + w, added in w's dtype (MLX semantics). */
  normWeight(name: string, gemma: boolean): Float64Array {
    const w = this.vec(name)
    if (!gemma) return w
    const dtype = this.#t.get(name)!.dtype
    return w.map((v) => roundTo(dtype, v + 1))
  }

  /** Logits at every position of `tokens` (full recompute, causal). */
  logits(tokens: number[], positions: number[] = []): Float64Array[] {
    if (this.c.model_type === 'gpt_oss') return this.#gptOssLogits(tokens, positions)
    if (this.c.model_type === 'qwen3_5' || this.c.model_type === 'qwen3_5_moe')
      return this.#qwen35Logits(tokens, positions)
    if (this.c.model_type === 'gemma4' || this.c.model_type === 'gemma4_text')
      return this.#gemma4Logits(tokens, positions)
    const c = this.text
    const R = this.root
    const gemma = c.model_type === 'gemma3_text'
    const H = c.num_attention_heads,
      KH = c.num_key_value_heads ?? H,
      hidden = c.hidden_size,
      D = c.head_dim ?? hidden / H,
      eps = c.rms_norm_eps
    const T = tokens.length
    const embed = this.mat(`${R}model.embed_tokens`)
    let h = tokens.map((t) => embed.v.slice(t * hidden, (t + 1) * hidden))
    if (gemma) {
      // h · bf16(√hidden), the product in the embedding's dtype (the scales' dtype when quantized)
      const table = this.#t.get(`${R}model.embed_tokens.scales`) ?? this.#t.get(`${R}model.embed_tokens.weight`)!
      const scale = roundTo('bf16', Math.sqrt(hidden))
      h = h.map((r) => r.map((v) => roundTo(table.dtype, v * scale)))
    }
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const p = `${R}model.layers.${l}`
      const sliding = gemma && (l + 1) % c.sliding_window_pattern !== 0
      const window = sliding ? c.sliding_window : Infinity
      const x = h.map((r) => rms(r, this.normWeight(`${p}.input_layernorm.weight`, gemma), eps))
      const bias = (n: string) =>
        this.#t.has(`${p}.self_attn.${n}.bias`) ? this.vec(`${p}.self_attn.${n}.bias`) : undefined
      const q = x.map((r) => mv(this.mat(`${p}.self_attn.q_proj`), r, bias('q_proj')))
      const k = x.map((r) => mv(this.mat(`${p}.self_attn.k_proj`), r, bias('k_proj')))
      const v = x.map((r) => mv(this.mat(`${p}.self_attn.v_proj`), r, bias('v_proj')))
      if (c.model_type === 'qwen3' || gemma) {
        const qn = this.normWeight(`${p}.self_attn.q_norm.weight`, gemma),
          kn = this.normWeight(`${p}.self_attn.k_norm.weight`, gemma)
        for (const r of q) for (let hh = 0; hh < H; hh++) r.set(rms(r.subarray(hh * D, (hh + 1) * D), qn, eps), hh * D)
        for (const r of k) for (let hh = 0; hh < KH; hh++) r.set(rms(r.subarray(hh * D, (hh + 1) * D), kn, eps), hh * D)
      }
      const ropeScale =
        !sliding && (c.rope_scaling?.rope_type === 'linear' || c.rope_scaling?.type === 'linear')
          ? 1 / c.rope_scaling.factor
          : 1
      const invFreq = sliding ? this.#invFreq(c.rope_local_base_freq) : this.#invFreq()
      for (let t = 0; t < T; t++) {
        const pos = (positions[t] ?? t) * ropeScale
        rotate(q[t]!, H, D, pos, invFreq)
        rotate(k[t]!, KH, D, pos, invFreq)
      }
      const scoreScale = gemma ? c.query_pre_attn_scalar ** -0.5 : 1 / Math.sqrt(D)
      const attn = q.map((qr, t) => {
        const out = new Float64Array(H * D)
        const first = Math.max(0, t - window + 1)
        for (let hh = 0; hh < H; hh++) {
          const kv = Math.floor(hh / (H / KH))
          const scores: number[] = []
          for (let j = first; j <= t; j++) {
            let s = 0
            for (let d = 0; d < D; d++) s += qr[hh * D + d]! * k[j]![kv * D + d]!
            scores.push(s * scoreScale)
          }
          const m = Math.max(...scores)
          const e = scores.map((s) => Math.exp(s - m))
          const z = e.reduce((a, b) => a + b, 0)
          for (let j = first; j <= t; j++)
            for (let d = 0; d < D; d++) out[hh * D + d]! += (e[j - first]! / z) * v[j]![kv * D + d]!
        }
        return out
      })
      const o = this.mat(`${p}.self_attn.o_proj`)
      const postAttn = gemma ? this.normWeight(`${p}.post_attention_layernorm.weight`, true) : undefined
      h = h.map((r, t) => {
        const y = mv(o, attn[t]!)
        return add(r, postAttn ? rms(y, postAttn, eps) : y)
      })
      const gate = this.mat(`${p}.mlp.gate_proj`),
        up = this.mat(`${p}.mlp.up_proj`),
        down = this.mat(`${p}.mlp.down_proj`)
      const preMlp = this.normWeight(
        gemma ? `${p}.pre_feedforward_layernorm.weight` : `${p}.post_attention_layernorm.weight`,
        gemma,
      )
      const postMlp = gemma ? this.normWeight(`${p}.post_feedforward_layernorm.weight`, true) : undefined
      const act = gemma ? geluTanh : (g: number) => g / (1 + Math.exp(-g))
      h = h.map((r) => {
        const xx = rms(r, preMlp, eps)
        const g = mv(gate, xx),
          u = mv(up, xx)
        const y = mv(
          down,
          g.map((gv, i) => act(gv) * u[i]!),
        )
        return add(r, postMlp ? rms(y, postMlp, eps) : y)
      })
    }
    const tied = gemma ? !this.#t.has(`${R}lm_head.weight`) : c.tie_word_embeddings
    const head = tied ? embed : this.mat(`${R}lm_head`)
    const norm = this.normWeight(`${R}model.norm.weight`, gemma)
    return h.map((r) => mv(head, rms(r, norm, eps)))
  }

  /** inverse frequencies: base^(-2i/D), or llama3's stretched periods (mlx-lm Llama3RoPE), computed here independently;
   * linear scaling instead multiplies positions by 1/factor (above) */
  #invFreq(localBase?: number): number[] {
    const c = this.text
    const D = c.head_dim ?? c.hidden_size / c.num_attention_heads,
      base = localBase ?? c.rope_theta
    const out: number[] = []
    for (let i = 0; i < D / 2; i++) {
      let period = base ** ((2 * i) / D)
      const rs = c.rope_scaling
      if (rs && rs.rope_type === 'llama3') {
        const low = rs.original_max_position_embeddings / rs.low_freq_factor
        const high = rs.original_max_position_embeddings / rs.high_freq_factor
        const wavelen = 2 * Math.PI * period
        if (wavelen > low) period *= rs.factor
        else if (wavelen > high && wavelen < low) {
          const smooth =
            (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) /
            (rs.high_freq_factor - rs.low_freq_factor)
          period = period / ((1 - smooth) / rs.factor + smooth)
        }
      }
      if (rs && rs.rope_type === 'yarn' && localBase === undefined) {
        // YaRN: interpolate (period × factor) for dims that turn fewer than beta_slow times over the original context,
        // keep the period for dims that turn more than beta_fast times, blend linearly in between
        const orig = rs.original_max_position_embeddings ?? 4096
        const dimFor = (turns: number) => (D * Math.log(orig / (turns * 2 * Math.PI))) / (2 * Math.log(base))
        const lo = Math.max(Math.floor(dimFor(rs.beta_fast ?? 32)), 0)
        let hi = Math.min(Math.ceil(dimFor(rs.beta_slow ?? 1)), D - 1)
        if (hi === lo) hi += 0.001
        const ramp = Math.min(Math.max((i - lo) / (hi - lo), 0), 1) // 0: keep, 1: interpolate
        const keep = 1 - ramp
        // blend in frequency space: 1/p' = keep/p + ramp/(factor·p)
        period = 1 / (keep / period + ramp / (rs.factor * period))
      }
      out.push(1 / period)
    }
    return out
  }
}

function rms(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0
  for (const v of x) ss += v * v
  const inv = 1 / Math.sqrt(ss / x.length + eps)
  return x.map((v, i) => v * inv * w[i]!)
}
function mv(m: Mat, x: Float64Array, bias?: Float64Array): Float64Array {
  const out = new Float64Array(m.rows)
  for (let r = 0; r < m.rows; r++) {
    let s = bias ? bias[r]! : 0
    const off = r * m.cols
    for (let c = 0; c < m.cols; c++) s += m.v[off + c]! * x[c]!
    out[r] = s
  }
  return out
}
const add = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]!)
function rotate(x: Float64Array, heads: number, D: number, pos: number, invFreq: number[]) {
  const half = D / 2
  for (let hh = 0; hh < heads; hh++)
    for (let i = 0; i < half; i++) {
      const th = pos * invFreq[i]!
      const a = x[hh * D + i]!,
        b = x[hh * D + i + half]!
      x[hh * D + i] = a * Math.cos(th) - b * Math.sin(th)
      x[hh * D + i + half] = a * Math.sin(th) + b * Math.cos(th)
    }
}
