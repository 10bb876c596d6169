/** cluster devices: which interface --discover takes and why the others are not it, from injected interface tables. */
import { expect, test } from 'bun:test'
import type { NetworkInterfaceInfo } from 'node:os'
import { describeDevices, formatDevices } from '../../src/doctor/data-path-devices.ts'
import { runCli } from '../support/run-cli.ts'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const v4 = (address: string, netmask = '255.255.0.0', internal = false) =>
  ({ address, netmask, family: 'IPv4', internal, mac: '00:00:00:00:00:00', cidr: null }) as NetworkInterfaceInfo
const table = {
  lo0: [v4('127.0.0.1', '255.0.0.0', true)],
  en0: [v4('192.168.1.20', '255.255.255.0')],
  bridge0: [v4('169.254.10.2')],
  en5: [v4('169.254.99.7')],
}

test('the first link-local interface by name is the data path; the others say why not', () => {
  const r = describeDevices(() => table, [])
  expect(r.interfaces.map((i) => [i.name, i.picked])).toEqual([
    ['bridge0', true],
    ['en0', false],
    ['en5', false],
  ])
  expect(r.interfaces[0]!.why).toContain('link-local 169.254.10.2')
  expect(r.interfaces[1]!.why).toContain('no link-local (169.254/16) address')
  expect(r.interfaces[2]!.why).toBe('link-local too, but bridge0 sorts first (pick it with --iface en5)')
  expect(r.hint).toBeNull()
  expect(formatDevices(r).at(-1)).toBe('  RDMA: no devices (rdma-ping and --tp-transport jaccl need one)')
})

test('--iface narrows the choice; no link-local address gives what to do; RDMA ports are listed', () => {
  const only = describeDevices(() => table, [{ device: 'rdma_en5', port: 1, state: 'PORT_ACTIVE' }], 'en5')
  expect(only.interfaces.find((i) => i.picked)?.name).toBe('en5')
  expect(only.interfaces.find((i) => i.name === 'bridge0')!.why).toBe('not --iface en5')
  expect(formatDevices(only)).toContain('  RDMA rdma_en5 port 1: PORT_ACTIVE')
  const none = describeDevices(() => ({ en0: table.en0 }), null)
  expect(none.interfaces.some((i) => i.picked)).toBe(false)
  expect(none.hint).toContain('connect the Thunderbolt cable')
  expect(formatDevices(none).at(-1)).toContain('cannot list RDMA devices')
})

test('dbcluster cluster devices --json on this machine', async () => {
  const r = await runCli(['cluster', 'devices', '--json'], mkdtempSync(join(tmpdir(), 'dbc-devices-')))
  expect(r.code, r.stderr).toBe(0)
  const report = JSON.parse(r.stdout)
  expect(Array.isArray(report.interfaces)).toBe(true)
  expect(report.interfaces.filter((i: { picked: boolean }) => i.picked).length).toBeLessThanOrEqual(1)
  expect('rdma' in report && 'hint' in report).toBe(true)
})
