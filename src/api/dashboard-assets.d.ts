/** The dashboard page is imported as text (`with { type: 'text' }`) so `bun build --compile` embeds it. */
declare module '*.html' {
  const text: string
  export default text
}
