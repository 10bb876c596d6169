/** A small XML well-formedness check for the SVG files we write: one root, every tag closed in order, attributes
 * quoted and unique, only the five predefined entities (or numeric ones), no stray '<' or '&' in text. Returns the
 * element tree so tests can read what was drawn. Throws with the offset of the first problem. */
export interface XmlElement {
  name: string
  attributes: Record<string, string>
  children: XmlElement[]
  text: string
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }

function decode(raw: string, at: number): string {
  if (raw.includes('<')) throw new Error(`'<' in text or attribute at ${at}`)
  return raw.replace(/&([^;\s]*);?/g, (whole, name: string) => {
    if (!whole.endsWith(';')) throw new Error(`unterminated entity '${whole}' at ${at}`)
    if (name in ENTITIES) return ENTITIES[name]!
    const numeric = /^#(x[0-9a-fA-F]+|[0-9]+)$/.exec(name)
    if (numeric) return String.fromCodePoint(name[1] === 'x' ? parseInt(name.slice(2), 16) : Number(name.slice(1)))
    throw new Error(`unknown entity '&${name};' at ${at}`)
  })
}

export function parseXml(text: string): XmlElement {
  let at = 0
  const skipProlog = () => {
    for (;;) {
      const rest = text.slice(at)
      const ws = /^\s*/.exec(rest)![0].length
      if (rest.startsWith('<?', ws)) at += rest.indexOf('?>') + 2
      else if (rest.startsWith('<!--', ws)) at += rest.indexOf('-->') + 3
      else return void (at += ws)
    }
  }
  skipProlog()
  const stack: XmlElement[] = []
  let root: XmlElement | null = null
  while (at < text.length) {
    const lt = text.indexOf('<', at)
    if (lt < 0) {
      if (stack.length || text.slice(at).trim()) throw new Error(`text after the root or unclosed elements at ${at}`)
      break
    }
    const between = text.slice(at, lt)
    if (stack.length) stack.at(-1)!.text += decode(between, at)
    else if (between.trim()) throw new Error(`text outside the root at ${at}`)
    if (text.startsWith('<!--', lt)) {
      const end = text.indexOf('-->', lt)
      if (end < 0) throw new Error(`unclosed comment at ${lt}`)
      at = end + 3
      continue
    }
    const gt = text.indexOf('>', lt)
    if (gt < 0) throw new Error(`unclosed tag at ${lt}`)
    const tag = text.slice(lt + 1, gt)
    at = gt + 1
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim()
      const open = stack.pop()
      if (!open || open.name !== name) throw new Error(`</${name}> at ${lt} closes <${open?.name ?? 'nothing'}>`)
      continue
    }
    const m = /^([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)$/.exec(tag)
    if (!m) throw new Error(`malformed tag <${tag.slice(0, 60)}> at ${lt}`)
    const element: XmlElement = { name: m[1]!, attributes: {}, children: [], text: '' }
    for (const a of m[2]!.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
      if (a[1]! in element.attributes) throw new Error(`attribute ${a[1]} twice in <${element.name}> at ${lt}`)
      element.attributes[a[1]!] = decode(a[2] ?? a[3] ?? '', lt)
    }
    if (stack.length) stack.at(-1)!.children.push(element)
    else if (root) throw new Error(`a second root element <${element.name}> at ${lt}`)
    else root = element
    if (!m[3]) stack.push(element)
  }
  if (!root) throw new Error('no root element')
  if (stack.length) throw new Error(`<${stack.at(-1)!.name}> is never closed`)
  return root
}

/** Every element of the tree (depth first) for which `match` holds. */
export function findAll(root: XmlElement, match: (e: XmlElement) => boolean): XmlElement[] {
  const out: XmlElement[] = []
  const walk = (e: XmlElement) => {
    if (match(e)) out.push(e)
    e.children.forEach(walk)
  }
  walk(root)
  return out
}
