/** Parsers over SAMPLE outputs written from the tools' documented formats (not captured from a real Mac). */
import { expect, test } from 'bun:test'
import {
  isThunderbolt5,
  parseIbvDevices,
  parseIbvDevinfo,
  parseRdmaCtlStatus,
  parseSwVers,
  parseThunderboltPorts,
} from '../../src/doctor/macos-parsers.ts'

test('rdma_ctl status: enabled, disabled, unknown', () => {
  expect(parseRdmaCtlStatus('enabled\n')).toBe('enabled')
  expect(parseRdmaCtlStatus('disabled\n')).toBe('disabled')
  expect(parseRdmaCtlStatus('usage: rdma_ctl ...')).toBe('unknown')
})

const IBV_DEVINFO_SAMPLE = `hca_id:\trdma_en2
\ttransport:\t\t\tInfiniBand (0)
\tfw_ver:\t\t\t\t0.0.0
\tphys_port_cnt:\t\t\t1
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_ACTIVE (4)
\t\t\tmax_mtu:\t\t4096 (5)

hca_id:\trdma_en3
\ttransport:\t\t\tInfiniBand (0)
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_DOWN (1)
`

test('ibv_devinfo: one entry per device port with its state', () => {
  expect(parseIbvDevinfo(IBV_DEVINFO_SAMPLE)).toEqual([
    { device: 'rdma_en2', port: 1, state: 'PORT_ACTIVE' },
    { device: 'rdma_en3', port: 1, state: 'PORT_DOWN' },
  ])
  expect(parseIbvDevinfo('No IB devices found\n')).toEqual([])
})

test('ibv_devices: device names under the header', () => {
  expect(
    parseIbvDevices(
      '    device          \t   node GUID\n    ------          \t----------------\n    rdma_en2        \t0000000000000000\n    rdma_en3        \t0000000000000001\n',
    ),
  ).toEqual(['rdma_en2', 'rdma_en3'])
})

const TB_SAMPLE = `Thunderbolt/USB4:

    Thunderbolt/USB4 Bus 0:

      Vendor Name: Apple Inc.
      Device Name: MacBook Pro
      Port (Receptacle 1):
          Status: Device connected
          Speed: Up to 80 Gb/s x1
    Thunderbolt/USB4 Bus 1:

      Port (Receptacle 2):
          Status: No device connected
          Speed: Up to 40 Gb/s x1
`

test('system_profiler SPThunderboltDataType: buses and their link speed', () => {
  const ports = parseThunderboltPorts(TB_SAMPLE)
  expect(ports.map((p) => p.speedGbps)).toEqual([80, 40])
  expect(ports.map((p) => isThunderbolt5(p.speedGbps))).toEqual([true, false])
  expect(isThunderbolt5(null)).toBe(false)
})

test('sw_vers: the product version', () => {
  expect(parseSwVers('ProductName:\t\tmacOS\nProductVersion:\t\t26.2\nBuildVersion:\t\t25C56\n')).toBe('26.2')
  expect(parseSwVers('garbage')).toBeNull()
})
