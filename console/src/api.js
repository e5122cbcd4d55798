// The native API as the console uses it: same origin, the bearer credential, errors as the API words them.

import { apiMessage } from './format.js'

/** An error answer: its status and the message of the API's error shape. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

export class Api {
  constructor(credential) {
    this.credential = credential
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.credential}` }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    })
    if (!response.ok) {
      const text = await response.text()
      throw new ApiError(response.status, apiMessage(text) ?? `${method} ${path}: HTTP ${response.status}`)
    }
    return response.status === 204 ? null : response.json()
  }

  /** Checks the credential: any authenticated read answers 401 for a bad one. */
  whoami() {
    return this.request('GET', '/v1/attachments/count')
  }

  /** A target's attachments, newest first; `cursor` continues a page. */
  list(target, cursor) {
    const query = new URLSearchParams({ ...target, order_by: '-created_at', limit: '60' })
    if (cursor) query.set('cursor', cursor)
    return this.request('GET', `/v1/attachments?${query}`)
  }

  rename(id, name) {
    return this.request('PATCH', `/v1/attachments/${encodeURIComponent(id)}`, { name })
  }

  remove(id) {
    return this.request('DELETE', `/v1/attachments/${encodeURIComponent(id)}`)
  }

  /** A write's state: queued, in_progress, complete (with the record) or failed (with the error). */
  upload(id) {
    return this.request('GET', `/v1/uploads/${encodeURIComponent(id)}`)
  }

  /** Polls an upload until its ingest job has committed or refused it (a tus upload's last PATCH answers when
   * the job is queued, not done). */
  async finished(id, { intervalMs = 250, timeoutMs = 120000 } = {}) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const state = await this.upload(id)
      if (state.status === 'complete' || state.status === 'failed') return state
      if (Date.now() > deadline) throw new ApiError(0, `upload ${id} was still ${state.status} after ${timeoutMs / 1000} s`)
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  }
}
