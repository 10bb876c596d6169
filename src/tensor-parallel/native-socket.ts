/** The tensor-parallel socket calls of the cpu shim (ffi/tp_socket.h): blocking TCP and the sealed channel for the
 * ranks' exchanges. A second symbol table on the same library as src/tensor/native.ts, so one last-error string. */
import { dlopen, FFIType } from 'bun:ffi'
import { DbcError } from '../errors.ts'
import { shimLocation } from '../tensor/native.ts'

const { ptr: P, i32, i64 } = FFIType

/** ffi/tp_socket.h, in order (test/tensor/native-abi.test.ts checks it against the header). */
export const TP_SOCKET_SYMBOLS = {
  dbc_sock_listen: { args: [P, i32, P], returns: i32 },
  dbc_sock_accept: { args: [i32, i32], returns: i32 },
  dbc_sock_connect: { args: [P, i32, i32], returns: i32 },
  dbc_sock_exchange: { args: [i32, P, i64, P, i64, i32], returns: i32 },
  dbc_sock_close: { args: [i32], returns: i32 },
  dbc_sock_peer_gone: { args: [i32], returns: i32 },
  dbc_tpc_available: { args: [i32], returns: i32 },
  dbc_tpc_new: { args: [i32, i32, P, P, i32, i32, i32, i64, P], returns: i32 },
  dbc_tpc_send: { args: [P, i32, P, i64, i32], returns: i32 },
  dbc_tpc_recv_header: { args: [P, i32, i64, P, i32], returns: i32 },
  dbc_tpc_recv_payload: { args: [P, P, i32], returns: i32 },
  dbc_tpc_all_sum2: { args: [P, i32, P, i64, P, i32], returns: i32 },
  dbc_tpc_peer_gone: { args: [P], returns: i32 },
  dbc_tpc_free: { args: [P], returns: i32 },
  dbc_last_error: { args: [], returns: FFIType.cstring },
} as const

export type TpSocketSymbols = ReturnType<typeof dlopen<typeof TP_SOCKET_SYMBOLS>>['symbols']

let tpSockets: TpSocketSymbols | undefined
/** The socket calls of the cpu shim, opened once. */
export function tpSocketLibrary(): TpSocketSymbols {
  if (tpSockets) return tpSockets
  const path = shimLocation()
  try {
    tpSockets = dlopen(path, TP_SOCKET_SYMBOLS).symbols
  } catch (error) {
    throw new DbcError(
      'E_SHIM_MISSING',
      `cannot load the tensor-parallel socket calls from ${path}: ${(error as Error).message}`,
      "rebuild the compute shim with 'bash scripts/build-shim.sh' (or 'bash scripts/setup.sh')",
    )
  }
  return tpSockets
}
