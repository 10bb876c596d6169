import { expect, test } from 'bun:test'
import { totalmem } from 'node:os'
import { DEFAULT_MEMORY_FRACTION, parseSize, usableMemoryBytes } from '../../src/cluster/usable-memory.ts'

test('--memory sizes: units, fractions, plain bytes; anything else is a usage error naming the flag', () => {
  expect(parseSize('12G')).toBe(12 * 1024 ** 3)
  expect(parseSize('512M')).toBe(512 * 1024 ** 2)
  expect(parseSize('1.5T')).toBe(1.5 * 1024 ** 4)
  expect(parseSize('64GiB')).toBe(64 * 1024 ** 3)
  expect(parseSize('4096')).toBe(4096)
  for (const bad of ['', 'lots', '-1G', '0', '12X', '1.2.3G'])
    expect(() => parseSize(bad)).toThrow(/--memory must be a size like 12G/)
  expect(usableMemoryBytes()).toBe(Math.floor(totalmem() * DEFAULT_MEMORY_FRACTION))
  expect(usableMemoryBytes('2G')).toBe(2 * 1024 ** 3)
})
