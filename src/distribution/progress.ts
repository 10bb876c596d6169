/** Progress of a multi-file transfer (hub pull or shard transfer): bytes so far, rate since the first byte, ETA. */
export interface TransferProgress {
  file: string
  /** Bytes moved so far in this run, over all files, and how many the run moves in all. */
  bytes: number
  total: number
  /** Bytes per second since the run started. */
  rate: number
  etaSeconds: number | null
}

export function progressMeter(total: number, emit: (p: TransferProgress) => void = () => {}) {
  const started = performance.now()
  let bytes = 0
  const report = (file: string) => {
    const seconds = (performance.now() - started) / 1000
    const rate = seconds > 0 ? bytes / seconds : 0
    emit({ file, bytes, total, rate, etaSeconds: rate > 0 ? Math.max(0, total - bytes) / rate : null })
  }
  return {
    add(file: string, n: number) {
      bytes += n
      report(file)
    },
    report,
    get bytes() {
      return bytes
    },
  }
}
