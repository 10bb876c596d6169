/** The JSON Schema keywords a constrained decode enforces: the grammar XGrammar builds from them admits only values the
 * schema accepts (test/engine/constraint.test.ts walks each with random tokens and judges the result with Ajv). Any
 * other keyword — `uniqueItems`, `multipleOf`, `not`, `oneOf`, `format`, … — is refused by name with where it is, since
 * a grammar that ignored it would produce values the schema rejects. So are `minimum`/`maximum` and their exclusive
 * forms: XGrammar 0.1.27's number ranges admit values past the bound (0..120 let 124 through, -50..50 let -55 through). */
import { ConstraintError } from './constraint.ts'

/** Keywords that describe and never constrain. */
const ANNOTATIONS = new Set([
  'title',
  'description',
  '$comment',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
  '$schema',
  '$id',
])

const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null'])

/** Keyword → how its value is checked (sub-schemas are walked). */
type Check = (value: unknown, at: string, walk: (schema: unknown, at: string) => void) => string | null

const isInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0
const count: Check = (v) => (isInt(v) ? null : 'a non-negative integer')
const schemaMap: Check = (v, at, walk) => {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return 'an object of schemas'
  for (const [k, s] of Object.entries(v)) walk(s, `${at}/${escape(k)}`)
  return null
}
const schemaList: Check = (v, at, walk) => {
  if (!Array.isArray(v) || v.length === 0) return 'a non-empty array of schemas'
  v.forEach((s, i) => walk(s, `${at}/${i}`))
  return null
}

const KEYWORDS: Record<string, Check> = {
  type: (v) =>
    (typeof v === 'string' && TYPES.has(v)) ||
    (Array.isArray(v) && v.length > 0 && v.every((t) => TYPES.has(t)) && new Set(v).size === v.length)
      ? null
      : `one of ${[...TYPES].join(', ')}, or a list of them`,
  properties: schemaMap,
  required: (v) =>
    Array.isArray(v) && v.every((k) => typeof k === 'string') && new Set(v).size === v.length
      ? null
      : 'a list of distinct property names',
  additionalProperties: (v, at, walk) => (typeof v === 'boolean' ? null : (walk(v, at), null)),
  items: (v, at, walk) => (walk(v, at), null),
  prefixItems: schemaList,
  minItems: count,
  maxItems: count,
  enum: (v) => (Array.isArray(v) && v.length > 0 ? null : 'a non-empty array'),
  const: () => null,
  anyOf: schemaList,
  $ref: (v) =>
    typeof v === 'string' && (v === '#' || v.startsWith('#/$defs/') || v.startsWith('#/definitions/'))
      ? null
      : "a reference inside this schema ('#', '#/$defs/…' or '#/definitions/…')",
  $defs: schemaMap,
  definitions: schemaMap,
  minLength: count,
  maxLength: count,
  pattern: (v) => {
    if (typeof v !== 'string') return 'a regular expression'
    try {
      new RegExp(v, 'u')
      return null
    } catch {
      return 'a valid regular expression'
    }
  },
}

/** The keywords enforced, for messages and docs. */
export const SUPPORTED_KEYWORDS: readonly string[] = Object.keys(KEYWORDS)

const escape = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1')

/** Throws ConstraintError naming the first keyword (and its JSON pointer) that the grammar would not enforce. */
export function checkSchema(schema: unknown): void {
  const walk = (s: unknown, at: string): void => {
    if (typeof s === 'boolean') return
    if (!s || typeof s !== 'object' || Array.isArray(s))
      throw new ConstraintError(`the schema at '${at || '#'}' must be an object or a boolean`, undefined, at || '#')
    const node = s as Record<string, unknown>
    for (const [key, value] of Object.entries(node)) {
      if (ANNOTATIONS.has(key)) continue
      const here = `${at || '#'}/${escape(key)}`
      const check = KEYWORDS[key]
      if (!check)
        throw new ConstraintError(
          `JSON Schema keyword '${key}' (at '${at || '#'}') is not supported: the grammar would not enforce it; supported: ${SUPPORTED_KEYWORDS.join(', ')}`,
          key,
          at || '#',
        )
      const wrong = check(value, here, walk)
      if (wrong) throw new ConstraintError(`'${key}' (at '${at || '#'}') must be ${wrong}`, key, at || '#')
    }
    // a pattern bounds a string's length alone: XGrammar ignores minLength/maxLength beside it
    const where = at || '#'
    for (const key of ['minLength', 'maxLength'])
      if (key in node && 'pattern' in node)
        throw new ConstraintError(
          `JSON Schema keyword '${key}' (at '${where}') is not supported beside 'pattern': the grammar would not enforce both; bound the length in the pattern`,
          key,
          where,
        )
    if (isInt(node.minLength) && isInt(node.maxLength) && (node.minLength as number) > (node.maxLength as number))
      throw new ConstraintError(`minLength exceeds maxLength (at '${at || '#'}')`, 'minLength', at || '#')
    if (isInt(node.minItems) && isInt(node.maxItems) && (node.minItems as number) > (node.maxItems as number))
      throw new ConstraintError(`minItems exceeds maxItems (at '${at || '#'}')`, 'minItems', at || '#')
  }
  walk(schema, '')
}
