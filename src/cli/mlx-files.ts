/** `cluster setup --hostfile FILE [--devices-file FILE]`: the files MLX distributed reads to find its peers, written for
 * the members `cluster setup` remembered, in their rank order, and kept (not temporary), for operators who run MLX tools
 * (mlx.launch, mlx-lm) beside dbcluster: ring's hostfile, and jaccl's RDMA devices matrix with its coordinator. */
import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { RememberedPeers } from '../cluster/remembered-peers.ts'
import { UsageError } from '../errors.ts'
import { buildLayout } from '../tensor-parallel/mlx-layout.ts'

export interface MlxFilesOptions {
  hostfile: string
  /** jaccl: where to write the devices matrix, and the device each rank uses towards the others (rank order). */
  devicesFile?: string
  rdmaDevices?: string
  port: number
}

/** Writes the files and returns the environment lines that point MLX at them. */
export function writeMlxFiles(cluster: RememberedPeers, o: MlxFilesOptions): string[] {
  const reports = cluster.nodes.map((n, rank) => ({ rank, ip: n.host, port: o.port }))
  const ring = buildLayout('ring', reports)
  const hostfile = resolve(o.hostfile)
  writeFileSync(hostfile, JSON.stringify(ring.hostfile, null, 2) + '\n')
  const env = [`MLX_HOSTFILE=${hostfile}`]
  if (o.devicesFile === undefined) return env
  const names = (o.rdmaDevices ?? '').split(',').map((s) => s.trim())
  if (names.length !== cluster.nodes.length || names.some((n) => !n))
    throw new UsageError(
      `--devices-file needs --rdma-devices with one name per node (${cluster.nodes.length}, in rank order: ${cluster.nodes.map((n) => n.serial).join(', ')})`,
      'each node’s RDMA device on the cable, e.g. --rdma-devices rdma_en5,rdma_en3 (`dbcluster cluster devices` on each lists them)',
    )
  const jaccl = buildLayout(
    'jaccl',
    reports.map((r) => ({ ...r, devices: cluster.nodes.map((_, j) => (j === r.rank ? null : names[r.rank]!)) })),
  )
  const devicesFile = resolve(o.devicesFile)
  writeFileSync(devicesFile, JSON.stringify(jaccl.devices, null, 2) + '\n')
  return [...env, `MLX_IBV_DEVICES=${devicesFile}`, `MLX_JACCL_COORDINATOR=${jaccl.coordinator}`]
}
