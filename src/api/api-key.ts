/** The API key check: `Authorization: Bearer KEY` (API clients) or HTTP Basic with KEY as the password (a browser
 * on /dashboard: its native prompt, then sent by the browser on the page's own requests, EventSource included).
 * Compared in constant time over SHA-256 digests, so neither the key's length nor its prefix leaks through timing.
 * `--api-key` may list several keys (comma-separated): each is a tenant of its own, whose prompts' cached KV blocks no
 * other key's request can reuse (docs/prefix-cache.md); one key is the one shared namespace. */
import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (text: string) => createHash('sha256').update(text).digest()

/** The keys `--api-key` lists. */
export function parseApiKeys(value: string): string[] {
  const keys = value.split(',').map((k) => k.trim())
  if (keys.some((k) => k.length === 0)) throw new Error('--api-key lists an empty key (keys are comma-separated)')
  return keys
}

/** The tenant of the key presented (null: no key, or a wrong one). With one key, every request shares tenant ''. */
export function apiKeyCheck(keys: string): (authorization: string | undefined) => string | null {
  const expected = parseApiKeys(keys).map((k) => ({
    digest: digest(k),
    // a key's tenant is named by its digest, so reordering the list moves no one's cache
    tenant: digest(`dbcluster-tenant\0${k}`).subarray(0, 8).toString('hex'),
  }))
  const shared = expected.length === 1
  return (authorization) => {
    if (!authorization) return null
    const [scheme, value = ''] = authorization.split(/\s+/, 2)
    let presented: string
    if (scheme?.toLowerCase() === 'bearer') presented = value
    else if (scheme?.toLowerCase() === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8')
      presented = decoded.slice(decoded.indexOf(':') + 1) // any user name; the password is the key
    } else return null
    const d = digest(presented)
    let tenant: string | null = null
    // every key compared, whichever matches: the time does not say which one did
    for (const e of expected) if (timingSafeEqual(d, e.digest)) tenant = shared ? '' : e.tenant
    return tenant
  }
}

/** Each authorized request's tenant, for the scheduler's prefix cache. */
const tenants = new WeakMap<Request, string>()
export const setTenant = (request: Request, tenant: string) => tenants.set(request, tenant)
export const tenantOf = (request: Request): string => tenants.get(request) ?? ''
