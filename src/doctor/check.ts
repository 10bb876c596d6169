/** One doctor check's outcome: PASS, FAIL or SKIP, with what was seen and a one-line fix. */
export type CheckStatus = 'PASS' | 'FAIL' | 'SKIP'

export interface CheckResult {
  name: string
  status: CheckStatus
  detail: string
  /** What to do next; set for FAIL (and for SKIP when there is something to do). */
  fix?: string
}

export const pass = (name: string, detail: string): CheckResult => ({ name, status: 'PASS', detail })
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'FAIL', detail, fix })
export const skip = (name: string, detail: string): CheckResult => ({ name, status: 'SKIP', detail })
