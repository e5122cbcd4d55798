// Pure helpers: no DOM, no network.

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']

/** 1536 -> "1.5 KB" (powers of 1024, as file managers show sizes). */
export function formatSize(bytes) {
  if (bytes == null) return ''
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  const shown = unit === 0 || value >= 100 ? Math.round(value) : Math.round(value * 10) / 10
  return `${shown} ${UNITS[unit]}`
}

/** The message of attachd's error shape, {"error": {"code", "message", "field"}}; null when the body is not one. */
export function apiMessage(body) {
  let parsed = body
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body)
    } catch {
      return null
    }
  }
  const message = parsed?.error?.message
  return typeof message === 'string' && message ? message : null
}

/** The upload's id: the last segment of the tus upload URL the server gave (its Location). */
export function uploadIdOf(uploadURL) {
  const path = new URL(uploadURL, 'http://x').pathname
  return path.slice(path.lastIndexOf('/') + 1)
}

/** What a bearer credential says about itself, to show who is signed in: a JWT's account and subject, an API
 * key's first characters (the server checks both; nothing here is trusted). */
export function describeCredential(credential) {
  if (credential.startsWith('atk_')) return `API key ${credential.slice(0, 12)}…`
  const payload = credential.split('.')[1]
  if (!payload) return 'token'
  try {
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/')))
    return [claims.account && `account ${claims.account}`, claims.sub && `as ${claims.sub}`]
      .filter(Boolean)
      .join(' ') || 'token'
  } catch {
    return 'token'
  }
}

/** A target as the API names it: both parts given, trimmed; null otherwise. */
export function parseTarget(type, id) {
  const targetType = type.trim()
  const targetId = id.trim()
  return targetType && targetId ? { target_type: targetType, target_id: targetId } : null
}
