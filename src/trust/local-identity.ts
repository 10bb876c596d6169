/** This machine's identity and attestation: the Secure Enclave key where the bridge exists, else the 0600 key file;
 * the attestation carries the machine facts and the RDMA decision of the capability gate. */
import { join } from 'node:path'
import { stateDir } from '../state-dir.ts'
import { signAttestation, type SignedAttestation } from './attestation.ts'
import type { Identity } from './identity.ts'
import { openEnclaveIdentity, probe as probeEnclave } from './identity-enclave.ts'
import { loadSoftwareIdentity } from './identity-software.ts'
import { machineFacts, rdmaProbes } from './machine-info.ts'
import { decideRdma, type RdmaDecision } from './rdma-gate.ts'

export const defaultKeyFile = (): string => join(stateDir(), 'identity.key')
export const defaultPinFile = (): string => join(stateDir(), 'pins.json')

export function loadLocalIdentity(keyFile = defaultKeyFile(), options: { create?: boolean } = {}): { identity: Identity; created: boolean; keyFile: string } {
  if (probeEnclave().available) return { identity: openEnclaveIdentity(), created: false, keyFile: '(Secure Enclave)' }
  return { ...loadSoftwareIdentity(keyFile, options), keyFile }
}

/** Signs this machine's attestation; `requestRdma` runs the capability gate, whose verdict is what gets signed. */
export async function attestLocalMachine(identity: Identity, requestRdma: boolean): Promise<{ attestation: SignedAttestation; rdma: RdmaDecision }> {
  const rdma = decideRdma(requestRdma, rdmaProbes())
  const attestation = await signAttestation(identity, { ...machineFacts(), rdmaEnabled: rdma.enabled })
  return { attestation, rdma }
}
