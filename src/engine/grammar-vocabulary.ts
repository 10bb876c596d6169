/** A model's vocabulary as XGrammar's TokenizerInfo wants it: every token's encoded form ordered by id, the encoding
 * (byte_level for GPT-2-style BPE, byte_fallback for SentencePiece-style, raw otherwise), read from tokenizer.json.
 * Special tokens are given as empty strings, so a grammar never places one inside its text; the stop tokens still end a
 * finished grammar. */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export interface GrammarVocabulary {
  /** token id → encoded token ('' for special tokens and ids the tokenizer does not define) */
  tokens: string[]
  vocabType: 'byte_level' | 'byte_fallback' | 'raw'
  prependSpace: boolean
  /** the logits' width (config.json's vocab_size: may exceed the tokenizer's own count) */
  vocabSize: number
  stopTokenIds: number[]
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | [string, number][] }
  added_tokens?: { id: number; content: string; special?: boolean }[]
  decoder?: Component | null
  normalizer?: Component | null
  pre_tokenizer?: Component | null
}
interface Component {
  type?: string
  decoders?: Component[]
  normalizers?: Component[]
  pretokenizers?: Component[]
  prepend?: string
  prepend_scheme?: string
  add_prefix_space?: boolean
}

const flatten = (c: Component | null | undefined): Component[] =>
  c ? [c, ...[...(c.decoders ?? []), ...(c.normalizers ?? []), ...(c.pretokenizers ?? [])].flatMap(flatten)] : []

/** GPT-2's byte ↔ printable character table, which byte-level vocabularies are written in. */
function byteLevelAlphabet(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  const out: string[] = []
  let extra = 0
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : 256 + extra++)
  return out
}

export function grammarVocabulary(
  modelDir: string,
  vocabSize: number,
  stopTokenIds: readonly number[],
): GrammarVocabulary {
  const json = JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')) as TokenizerJson
  const decoders = flatten(json.decoder).map((d) => d.type)
  const vocabType = decoders.includes('ByteLevel')
    ? 'byte_level'
    : decoders.includes('ByteFallback')
      ? 'byte_fallback'
      : 'raw'
  const prependSpace = [...flatten(json.normalizer), ...flatten(json.pre_tokenizer)].some(
    (c) =>
      (c.type === 'Prepend' && c.prepend === '▁') ||
      (c.type === 'Metaspace' && (c.prepend_scheme === 'always' || c.add_prefix_space === true)),
  )
  const tokens: string[] = new Array(vocabSize).fill('')
  const vocab = json.model?.vocab ?? {}
  if (Array.isArray(vocab)) vocab.forEach(([piece], id) => id < vocabSize && (tokens[id] = piece))
  else for (const [piece, id] of Object.entries(vocab)) if (id < vocabSize) tokens[id] = piece
  const alphabet = vocabType === 'byte_level' ? byteLevelAlphabet() : null
  for (const t of json.added_tokens ?? []) {
    if (t.id >= vocabSize) continue
    // an added token's content is plain text: written in the vocabulary's own encoding, as its other tokens are
    tokens[t.id] = t.special
      ? ''
      : alphabet
        ? [...new TextEncoder().encode(t.content)].map((b) => alphabet[b]).join('')
        : t.content
  }
  return { tokens, vocabType, prependSpace, vocabSize, stopTokenIds: [...stopTokenIds] }
}
