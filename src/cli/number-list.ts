/** Parsing of numeric command-line options ("4", "1,2,4,8") with one clear error per bad value. */
import { UsageError } from '../errors.ts'

export function positiveInt(value: string, name: string): number {
  const n = Number(value)
  if (!/^\s*\d+\s*$/.test(value) || !Number.isInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, got '${value}'`)
  return n
}

/** A comma-separated list of positive integers, in the order given, without repeats. */
export function positiveIntList(value: string, name: string): number[] {
  const items = value.split(',').map((v) => v.trim())
  if (items.some((v) => !/^\d+$/.test(v) || Number(v) < 1))
    throw new UsageError(
      `--${name} must be comma-separated positive integers, got '${value}'`,
      `e.g. --${name} 1,2,4,8`,
    )
  return [...new Set(items.map(Number))]
}

/** A TCP port flag: 1..65535. */
export function portNumber(value: string, name: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--${name} must be 1..65535, got '${value}'`)
  return n
}
