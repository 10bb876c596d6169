/** Files embedded into the single binary with `with { type: 'file' }` resolve to a path at run time. */
declare module '*.so' {
  const path: string
  export default path
}
