/** DType codes shared with ffi/dbc.h (DBC_F32 …) and with safetensors names. */
import type { DType } from './backend.ts'

export const DTYPE_CODES: Record<DType, number> = { f32: 0, f16: 1, bf16: 2, u32: 3, i32: 4, u8: 5 }
export const DTYPE_BY_CODE: readonly DType[] = ['f32', 'f16', 'bf16', 'u32', 'i32', 'u8']
