/** `dbcluster cluster devices`: which network interface the data path would use, and the RDMA devices' port states. */
import { defineCommand } from 'citty'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { describeDevices, formatDevices } from '../doctor/data-path-devices.ts'
import type { IbvPort } from '../doctor/macos-parsers.ts'
import { parseIbvDevinfo } from '../doctor/macos-parsers.ts'
import { runWithTimeout } from '../doctor/run-with-timeout.ts'

/** RDMA ports: ibv_devinfo on macOS; /sys/class/infiniband/DEV/ports/N/state on Linux ("4: ACTIVE"). */
async function rdmaPorts(): Promise<IbvPort[] | null> {
  if (process.platform === 'darwin') {
    const r = await runWithTimeout(['ibv_devinfo'])
    return r.ok ? parseIbvDevinfo(r.stdout) : null
  }
  const dir = '/sys/class/infiniband'
  if (!existsSync(dir)) return []
  return readdirSync(dir).flatMap((device) => {
    const ports = join(dir, device, 'ports')
    return existsSync(ports)
      ? readdirSync(ports).map((port) => ({
          device,
          port: Number(port),
          state: readFileSync(join(ports, port, 'state'), 'utf8').trim(),
        }))
      : []
  })
}

export default defineCommand({
  meta: {
    name: 'devices',
    description:
      "This machine's network interfaces for the data path (the one serve --discover would take, marked *, and why) and its RDMA devices' port states",
  },
  args: {
    iface: { type: 'string', description: 'As serve --iface: only this interface may be picked' },
    json: { type: 'boolean', description: 'Print {interfaces, rdma, hint} as JSON', default: false },
  },
  async run({ args }) {
    const report = describeDevices(networkInterfaces, await rdmaPorts(), args.iface)
    if (args.json) return console.log(JSON.stringify(report))
    for (const line of formatDevices(report)) console.log(line)
  },
})
