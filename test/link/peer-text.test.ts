/** Peer-provided text in logs: escaped control characters, a length cap, and refusals logged once per window. */
import { expect, test } from 'bun:test'
import { peerText, RateLimitedLog } from '../../src/peer-text.ts'

test('control characters are escaped and long text is cut with a count', () => {
  expect(peerText('a\nb\r\tc\u001b[31md\u007f\u009b\u2028')).toBe('a\\nb\\r\\tc\\x1b[31md\\x7f\\x9b\\u2028')
  expect(peerText('x'.repeat(250), 200)).toBe(`${'x'.repeat(200)}… (50 more characters)`)
  expect(peerText('plain: ünïcode stays')).toBe('plain: ünïcode stays')
})

test('a key logs once per window; the lines held back are counted on the next one', () => {
  let now = 0
  const lines: string[] = []
  const log = new RateLimitedLog(
    (l) => lines.push(l),
    10_000,
    () => now,
  )
  expect(log.line('a', 'refused a')).toBe(true)
  expect(log.line('a', 'refused a')).toBe(false)
  expect(log.line('b', 'refused b')).toBe(true)
  now = 5_000
  log.line('a', 'refused a')
  now = 10_000
  expect(log.line('a', 'refused a')).toBe(true)
  expect(lines).toEqual(['refused a', 'refused b', 'refused a (and 2 more like it since the last such line)'])
})
