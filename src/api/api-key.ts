/** The API key check: `Authorization: Bearer KEY` (API clients) or HTTP Basic with KEY as the password (a browser
 * on /dashboard: its native prompt, then sent by the browser on the page's own requests, EventSource included).
 * Compared in constant time over SHA-256 digests, so neither the key's length nor its prefix leaks through timing. */
import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (text: string) => createHash('sha256').update(text).digest()

export function apiKeyCheck(key: string): (authorization: string | undefined) => boolean {
  const expected = digest(key)
  return (authorization) => {
    if (!authorization) return false
    const [scheme, value = ''] = authorization.split(/\s+/, 2)
    let presented: string
    if (scheme?.toLowerCase() === 'bearer') presented = value
    else if (scheme?.toLowerCase() === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8')
      presented = decoded.slice(decoded.indexOf(':') + 1) // any user name; the password is the key
    } else return false
    return timingSafeEqual(digest(presented), expected)
  }
}
