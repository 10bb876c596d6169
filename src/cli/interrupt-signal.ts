/** Turns the first SIGINT/SIGTERM into an AbortSignal, so a long command can stop its work, clean up (servers it
 * started, partial results) and exit itself. A second Ctrl-C finds no handler and ends the process at once. */
export interface Interrupt {
  signal: AbortSignal
  /** The signal's name once one arrived. */
  readonly received: NodeJS.Signals | null
  dispose(): void
}

export function interruptOnSignals(onSignal?: (name: NodeJS.Signals) => void): Interrupt {
  const controller = new AbortController()
  let received: NodeJS.Signals | null = null
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((name) => {
    const handler = () => {
      received ??= name
      onSignal?.(name)
      dispose()
      controller.abort(new Error(name))
    }
    process.once(name, handler)
    return [name, handler] as const
  })
  const dispose = () => {
    for (const [name, handler] of handlers) process.off(name, handler)
  }
  return {
    signal: controller.signal,
    get received() {
      return received
    },
    dispose,
  }
}
