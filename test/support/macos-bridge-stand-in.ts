/** Builds small C libraries that stand in for the macOS bridge (ffi/macos/dbc_macos.h), so the bun:ffi loader and
 * wrapper run for real on any OS with a C compiler. They are test doubles for the Apple frameworks, never shipped. */
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MACOS_BRIDGE_ABI } from '../../src/trust/macos-bridge.ts'

/** Compiles `source` into a shared library named like the bridge; null where there is no C compiler. */
export function compileLibrary(source: string): string | null {
  if (!Bun.which('cc')) return null
  const dir = mkdtempSync(join(tmpdir(), 'dbc-bridge-'))
  writeFileSync(join(dir, 'bridge.c'), source)
  const out = join(dir, 'libdbc_macos.dylib')
  const r = Bun.spawnSync(['cc', '-shared', '-fPIC', '-o', out, join(dir, 'bridge.c')], { stderr: 'pipe' })
  if (r.exitCode !== 0) throw new Error(r.stderr.toString())
  return out
}

/** A stand-in for the Apple frameworks behind the real ABI, compiled here so the bun:ffi wrapper's argument passing,
 * error messages and buffer growth run for real on any OS: no enclave, a Keychain that echoes "service|account", a
 * 3000-byte item that needs a second, larger buffer, and a write that fails the way a locked keychain does. */
const STAND_IN = `#include <stdint.h>
#include <string.h>
#include <stdio.h>
static const char *last = "";
static char echo[4096];
int32_t dbc_mac_abi_version(void) { return ${MACOS_BRIDGE_ABI}; }
const char *dbc_mac_last_error(void) { return last; }
int32_t dbc_se_available(void) { return 0; }
int32_t dbc_se_create(uint8_t *b, int32_t c, int32_t *n) { last = "this Mac has no Secure Enclave (SecureEnclave.isAvailable is false)"; return -3; }
int32_t dbc_se_public_key(const uint8_t *b, int32_t n, uint8_t *o) { last = "no enclave"; return -6; }
int32_t dbc_se_sign(const uint8_t *b, int32_t n, const uint8_t *m, int64_t ml, uint8_t *o) { last = "no enclave"; return -7; }
int32_t dbc_kc_set(const char *s, const char *a, const uint8_t *d, int32_t n) { last = "SecItemAdd/SecItemUpdate: User interaction is not allowed. (OSStatus -25308)"; return -10; }
static int32_t out(const char *t, int32_t len, uint8_t *o, int32_t cap, int32_t *n) { *n = len; if (len > cap) { last = "too small"; return -2; } memcpy(o, t, len); return 0; }
int32_t dbc_kc_get(const char *s, const char *a, uint8_t *o, int32_t cap, int32_t *n) {
  if (strcmp(a, "missing") == 0) return 1;
  if (strcmp(a, "big") == 0) { memset(echo, 'x', 3000); return out(echo, 3000, o, cap, n); }
  int len = snprintf(echo, sizeof echo, "%s|%s", s, a);
  return out(echo, len, o, cap, n);
}
int32_t dbc_kc_delete(const char *s, const char *a) { return strcmp(a, "present") == 0 ? 0 : 1; }
int32_t dbc_kc_list(const char *s, uint8_t *o, int32_t cap, int32_t *n) { return strcmp(s, "empty") == 0 ? out("", 0, o, cap, n) : out("a\\nb\\nc", 5, o, cap, n); }
`

/** Item "missing" is absent, "big" is 3000 bytes; the list is a, b, c (nothing for service "empty"); only "present" deletes. */
export const compileStandIn = (): string | null => compileLibrary(STAND_IN)
