/** This machine's identity and attestation: a Secure Enclave key where this Mac has one (and the bridge is built), else
 * the 0600 key file; the attestation carries the machine facts and the RDMA decision of the capability gate. */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { stateDir } from '../state-dir.ts'
import { signAttestation, type SignedAttestation } from './attestation.ts'
import { TrustError } from './errors.ts'
import type { Identity } from './identity.ts'
import {
  createEnclaveIdentity,
  openEnclaveIdentity,
  probe as probeEnclave,
  type EnclaveProbe,
} from './identity-enclave.ts'
import { loadSoftwareIdentity } from './identity-software.ts'
import { machineFacts, rdmaProbes } from './machine-info.ts'
import { decideRdma, type RdmaDecision } from './rdma-gate.ts'

export const defaultKeyFile = (): string => join(stateDir(), 'identity.key')
export const defaultPinFile = (): string => join(stateDir(), 'pins.json')
/** The enclave key's blob file sits beside the software key file: identity.key → identity.enclave. */
export const enclaveKeyFileFor = (keyFile: string): string => `${keyFile.replace(/\.key$/, '')}.enclave`

export type IdentityChoice =
  | { use: 'enclave'; create: boolean }
  | { use: 'software' }
  | { use: 'refuse'; code: string; message: string; hint: string }

/** Which key to use, as a pure function of what exists (so every branch is tested on any OS):
 * an existing enclave key wins (and is never silently replaced when the enclave cannot be reached); an existing software
 * key is kept (switching kinds changes the identity and needs a re-pin); a new machine gets an enclave key where it can. */
export function chooseIdentity(state: {
  enclave: EnclaveProbe
  enclaveKeyFile: string
  enclaveKeyExists: boolean
  softwareKeyExists: boolean
  create: boolean
}): IdentityChoice {
  if (state.enclaveKeyExists) {
    if (state.enclave.available) return { use: 'enclave', create: false }
    return {
      use: 'refuse',
      code: 'E_ENCLAVE_UNAVAILABLE',
      message: `this machine's identity is the Secure Enclave key in ${state.enclaveKeyFile}, but ${state.enclave.reason}`,
      hint: `build the bridge ('bash scripts/build-macos-bridge.sh'), or move ${state.enclaveKeyFile} away to use a software key (the coordinator must then re-pin this machine)`,
    }
  }
  if (state.softwareKeyExists || !state.enclave.available) return { use: 'software' }
  if (!state.create)
    return {
      use: 'refuse',
      code: 'E_KEY_MISSING',
      message: `no identity key at ${state.enclaveKeyFile}`,
      hint: "run 'dbcluster identity init'",
    }
  return { use: 'enclave', create: true }
}

export function loadLocalIdentity(
  keyFile = defaultKeyFile(),
  options: { create?: boolean } = {},
): { identity: Identity; created: boolean; keyFile: string } {
  const enclaveKeyFile = enclaveKeyFileFor(keyFile)
  const enclaveKeyExists = existsSync(enclaveKeyFile)
  const softwareKeyExists = existsSync(keyFile)
  // Probing loads the bridge; skip it when only a software key exists and no enclave key could be involved.
  const enclave: EnclaveProbe =
    softwareKeyExists && !enclaveKeyExists ? { available: false, reason: 'a software key exists' } : probeEnclave()
  const choice = chooseIdentity({
    enclave,
    enclaveKeyFile,
    enclaveKeyExists,
    softwareKeyExists,
    create: options.create !== false,
  })
  switch (choice.use) {
    case 'refuse':
      throw new TrustError(choice.code, choice.message, choice.hint)
    case 'software':
      return { ...loadSoftwareIdentity(keyFile, options), keyFile }
    case 'enclave':
      if (choice.create)
        return { identity: createEnclaveIdentity(enclaveKeyFile), created: true, keyFile: enclaveKeyFile }
      return { identity: openEnclaveIdentity(enclaveKeyFile), created: false, keyFile: enclaveKeyFile }
  }
}

/** Signs this machine's attestation; `requestRdma` runs the capability gate, whose verdict is what gets signed. */
export async function attestLocalMachine(
  identity: Identity,
  requestRdma: boolean,
): Promise<{ attestation: SignedAttestation; rdma: RdmaDecision }> {
  const rdma = decideRdma(requestRdma, rdmaProbes())
  const attestation = await signAttestation(identity, { ...machineFacts(), rdmaEnabled: rdma.enabled })
  return { attestation, rdma }
}
