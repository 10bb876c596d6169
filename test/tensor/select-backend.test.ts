/** --backend auto: mlx only where MLX has a GPU; a CPU-only MLX (Linux) loses to the cpu backend, and the log line says why. */
import { expect, test } from 'bun:test'
import { autoBackend, parseBackendChoice, selectBackend } from '../../src/tensor/select-backend.ts'
import { mlxDevice, probe } from '../../src/tensor/mlx.ts'

test('auto picks mlx on a GPU, the cpu backend for a CPU-only MLX or none, each with its reason', () => {
  expect(autoBackend({ available: true }, 'gpu')).toEqual({
    backend: 'mlx',
    reason: 'mlx backend (auto: mlx-c found, running on its GPU)',
  })
  const cpuOnly = autoBackend({ available: true }, 'cpu')
  expect(cpuOnly.backend).toBe('cpu')
  expect(cpuOnly.reason).toContain('MLX has no GPU here')
  expect(cpuOnly.reason).toContain('--backend mlx forces it')
  expect(autoBackend({ available: false, reason: 'libdbc_mlx.so not found' }, undefined)).toEqual({
    backend: 'cpu',
    reason: 'cpu backend (auto: libdbc_mlx.so not found)',
  })
})

test('on this machine auto never runs MLX on the CPU (with or without the glue built), and names the choice', () => {
  const picked = selectBackend('auto', { threads: 1 })
  const gpu = probe().available && mlxDevice() === 'gpu'
  expect(picked.backend.name).toMatch(gpu ? /^mlx .*\(gpu\)$/ : /^cpu/)
  if (probe().available && !gpu) expect(picked.reason).toContain('MLX has no GPU here')
})

test('backend names are checked', () => {
  expect(parseBackendChoice(undefined)).toBe('auto')
  expect(() => parseBackendChoice('metal')).toThrow("unknown backend 'metal'")
})
