// What the console remembers for this browser tab only (sessionStorage): the credential and the target.

const CREDENTIAL = 'attachd.credential'
const TARGET = 'attachd.target'

export function credential() {
  return sessionStorage.getItem(CREDENTIAL)
}

export function signIn(value) {
  sessionStorage.setItem(CREDENTIAL, value)
}

export function signOut() {
  sessionStorage.removeItem(CREDENTIAL)
}

export function target() {
  const saved = sessionStorage.getItem(TARGET)
  return saved ? JSON.parse(saved) : null
}

export function setTarget(value) {
  sessionStorage.setItem(TARGET, JSON.stringify(value))
}
