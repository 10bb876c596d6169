/** GET /docs: an OpenAPI document rendered as one self-contained HTML page (no script, nothing loaded from elsewhere):
 * each operation with its request fields, their types, bounds and descriptions, and its responses. */
import type { JsonSchema } from './request-schema.ts'
import type { OpenApiDocument } from './openapi.ts'

const escape = (text: unknown) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
const code = (text: unknown) => `<code>${escape(text)}</code>`
const isObject = (v: unknown): v is JsonSchema => !!v && typeof v === 'object' && !Array.isArray(v)
const schemaAnchor = (name: string) => `schema-${name}`

/** Bounds and other keywords, in words: `≥ 1`, `≤ 8 items`, `pattern ^…$`, `default 1`. */
function constraints(s: JsonSchema): string[] {
  const out: string[] = []
  const add = (key: string, text: (v: unknown) => string) => key in s && out.push(text(s[key]))
  add('minimum', (v) => `≥ ${v}`)
  add('exclusiveMinimum', (v) => `> ${v}`)
  add('maximum', (v) => `≤ ${v}`)
  add('exclusiveMaximum', (v) => `< ${v}`)
  add('minLength', (v) => `at least ${v} characters`)
  add('minItems', (v) => `at least ${v} items`)
  add('maxItems', (v) => `at most ${v} items`)
  add('maxProperties', (v) => `at most ${v} entries`)
  add('pattern', (v) => `pattern ${code(v)}`)
  add('default', (v) => `default ${code(JSON.stringify(v))}`)
  return out
}

/** A one-line type: `integer`, `"text"`, `array of string`, `string | null`, a link for a reference. */
function typeLine(s: JsonSchema): string {
  if (typeof s.$ref === 'string') {
    const name = s.$ref.split('/').at(-1)!
    return `<a href="#${schemaAnchor(name)}">${escape(name)}</a>`
  }
  if ('const' in s) return code(JSON.stringify(s.const))
  if (Array.isArray(s.enum)) return s.enum.map((v) => code(JSON.stringify(v))).join(' | ')
  const types = Array.isArray(s.type) ? s.type : s.type !== undefined ? [s.type] : []
  if (types.includes('array') && isObject(s.items) && isSimple(s.items)) return `array of ${typeLine(s.items)}`
  return types.map(code).join(' | ')
}

/** A schema whose type line says it all (no members, fields or items of its own to list). */
const isSimple = (s: JsonSchema): boolean =>
  !Array.isArray(s.anyOf) &&
  !isObject(s.properties) &&
  !(isObject(s.items) && !isSimple(s.items)) &&
  !isObject(s.additionalProperties)

/** The schema of a field: its type and bounds on one line, then its members, fields or items below. */
function renderSchema(s: JsonSchema, orNull = false): string {
  const members = Array.isArray(s.anyOf) ? (s.anyOf as JsonSchema[]) : []
  const others = members.filter((m) => m.type !== 'null')
  // a field that may be null (request-schema.ts's orNull) reads as its schema, "or null"
  if (others.length === 1 && members.length === 2)
    return renderSchema({ ...others[0]!, description: s.description ?? others[0]!.description }, true)
  const parts: string[] = []
  const line = [typeLine(s), ...constraints(s)].filter(Boolean).join(', ')
  const nullText = orNull ? `<span class="null">${line ? ', or null' : 'null, or:'}</span>` : ''
  parts.push(`<span class="type">${line}${nullText}</span>`)
  if (typeof s.description === 'string') parts.push(`<div class="desc">${escape(s.description)}</div>`)
  if (others.length)
    parts.push(
      `<div>one of:</div><ol class="members">${others.map((m) => `<li>${renderSchema(m)}</li>`).join('')}</ol>`,
    )
  if (isObject(s.properties)) parts.push(fieldsTable(s))
  if (s.additionalProperties === false) parts.push('<div class="note">no other fields</div>')
  else if (isObject(s.additionalProperties)) {
    const extra = s.additionalProperties
    parts.push(
      extra.type === 'null'
        ? '<div class="note">any other field only as null</div>'
        : `<div class="note">${isObject(s.propertyNames) ? `keys matching ${code(s.propertyNames.pattern)}, ` : ''}each value: ${renderSchema(extra)}</div>`,
    )
  }
  if (isObject(s.items) && !isSimple(s.items))
    parts.push(`<div>items:</div><div class="nested">${renderSchema(s.items)}</div>`)
  return parts.join('')
}

function fieldsTable(s: JsonSchema): string {
  const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : [])
  const rows = Object.entries(s.properties as Record<string, JsonSchema>).map(
    ([name, field]) =>
      `<tr><td class="field">${code(name)}${required.has(name) ? ' <span class="req">required</span>' : ''}</td><td>${renderSchema(field)}</td></tr>`,
  )
  return `<table class="fields"><tbody>${rows.join('')}</tbody></table>`
}

function renderOperation(doc: OpenApiDocument, method: string, path: string, op: JsonSchema): string {
  const resolve = (s: JsonSchema) =>
    typeof s.$ref === 'string' ? doc.components.schemas![s.$ref.split('/').at(-1)!]! : s
  const id = String(op.operationId)
  const body = op.requestBody as { required: boolean; content: Record<string, { schema: JsonSchema }> } | undefined
  const responses = Object.entries(op.responses as Record<string, { description: string; content?: object }>)
  const open = Array.isArray(op.security) && op.security.some((s) => isObject(s) && !Object.keys(s).length)
  return `<section class="op" id="${escape(id)}">
<h3><span class="method ${escape(method)}">${escape(method.toUpperCase())}</span> ${code(path)} — ${escape(op.summary)}</h3>
<p>${escape(op.description)}</p>${open ? '<p class="note">answers without the API key, too</p>' : ''}
${
  body
    ? `<h4>Request body${body.required ? '' : ' (optional)'}</h4>${Object.entries(body.content)
        .map(([type, media]) => `<div>${code(type)}</div>${renderSchema(resolve(media.schema))}`)
        .join('')}`
    : ''
}
<h4>Responses</h4><table class="responses"><tbody>${responses
    .map(
      ([status, r]) =>
        `<tr><td>${code(status)}</td><td>${escape(r.description)}${Object.entries(
          (r.content ?? {}) as Record<string, { schema: JsonSchema }>,
        )
          .map(
            ([type, media]) =>
              `<div>${code(type)} ${media.schema.$ref ? typeLine(media.schema) : ''}</div>${isObject(media.schema.properties) ? `<details><summary>fields</summary>${fieldsTable(media.schema)}</details>` : ''}`,
          )
          .join('')}</td></tr>`,
    )
    .join('')}</tbody></table>
</section>`
}

export function renderDocsPage(doc: OpenApiDocument): string {
  const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => ({ path, method, op })),
  )
  const tags = [...new Set(operations.map((o) => (o.op.tags as string[])[0]!))]
  const toc = tags
    .map(
      (tag) =>
        `<li>${escape(tag)}<ul>${operations
          .filter((o) => (o.op.tags as string[])[0] === tag)
          .map(
            (o) =>
              `<li><a href="#${escape(o.op.operationId)}"><span class="method ${escape(o.method)}">${escape(o.method.toUpperCase())}</span> ${escape(o.path)}</a></li>`,
          )
          .join('')}</ul></li>`,
    )
    .join('')
  const schemes = doc.components.securitySchemes
  const auth = schemes
    ? `<p class="auth">Every route needs the API key: ${Object.values(schemes)
        .map((s) => escape(s.description))
        .join(', or ')}.</p>`
    : '<p class="auth">This server runs without an API key: every route is open to whoever reaches it.</p>'
  // request bodies are shown with their routes; what responses refer to (Error) is listed once, below them
  const bodies = new Set(
    operations.flatMap((o) =>
      Object.values((o.op.requestBody as { content?: Record<string, { schema: JsonSchema }> })?.content ?? {}).map(
        (m) => String(m.schema.$ref).split('/').at(-1),
      ),
    ),
  )
  const schemas = Object.entries(doc.components.schemas!)
    .filter(([name]) => !bodies.has(name))
    .map(
      ([name, s]) =>
        `<section class="schema" id="${schemaAnchor(name)}"><h3>${escape(name)}</h3>${renderSchema(s)}</section>`,
    )
    .join('\n')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(doc.info.title)} API ${escape(doc.info.version)}</title>
<link rel="icon" href="data:,">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.4em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd} h3{font-size:1.05em} h4{margin:.8em 0 .3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px} .op,.schema{border:1px solid #ddd;border-radius:6px;padding:.2em 1em .8em;margin:1em 0}
.method{display:inline-block;min-width:3.6em;text-align:center;border-radius:4px;color:#fff;font-weight:600;font-size:.85em;padding:.1em .3em}
.get{background:#1a7f37} .post{background:#0969da} table{border-collapse:collapse;width:100%} td{border-top:1px solid #eee;padding:.3em .5em;vertical-align:top}
td.field{white-space:nowrap;width:1%} .req{color:#c62828;font-size:.8em} .desc{color:#444;margin:.15em 0} .note{color:#666;font-style:italic}
.null{color:#888} .nested,.members{margin:.2em 0 .2em 1em} .fields .fields{background:#fafafa} ul{padding-left:1.2em}
</style></head>
<body>
<h1>${escape(doc.info.title)} API <small>${escape(doc.info.version)} · OpenAPI ${escape(doc.openapi)}</small></h1>
<p>${escape(doc.info.description)}</p>
${auth}
<p>The document itself: <a href="/openapi.json">/openapi.json</a>.</p>
<nav><ul id="toc">${toc}</ul></nav>
<h2>Routes</h2>
${operations.map((o) => renderOperation(doc, o.method, o.path, o.op)).join('\n')}
<h2>Schemas</h2>
${schemas}
</body></html>
`
}
