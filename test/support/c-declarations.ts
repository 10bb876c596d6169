/** The functions a C header declares, with their arity: to hold a bun:ffi symbol table to its header. */
export function cDeclarations(text: string): { name: string; arity: number }[] {
  const code = text
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join(' ')
  const out: { name: string; arity: number }[] = []
  for (const statement of code.split(';')) {
    const m = /(dbc_[a-z0-9_]+)\(([^)]*)\)\s*$/.exec(statement.replace(/\s+/g, ' ').trim())
    if (!m) continue
    const params = m[2]!.trim()
    out.push({ name: m[1]!, arity: params === 'void' || params === '' ? 0 : params.split(',').length })
  }
  return out
}

/** A bun:ffi symbol table as the same list. */
export function tableDeclarations(
  table: Record<string, { args: readonly unknown[] }>,
): { name: string; arity: number }[] {
  return Object.entries(table).map(([name, def]) => ({ name, arity: def.args.length }))
}
