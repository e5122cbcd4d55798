// The upload console: sign in, pick a target, upload with Uppy, and see, rename, delete and download what the
// target has. The grid is drawn again after each change; after each upload the console polls
// GET /v1/uploads/{id} until the ingest job has committed (or refused) it, then reloads the list.

import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'
import './console.css'

import { Api } from './api.js'
import { describeCredential, parseTarget } from './format.js'
import { renderGrid } from './grid.js'
import * as session from './session.js'
import { createUploader } from './uploader.js'

const $ = (id) => document.getElementById(id)

let api = null // signed in: the API with the credential
let currentTarget = null // {target_type, target_id} whose attachments the grid shows
let shownRecords = [] // what the grid shows, page after page
let nextCursor = null // where the next page starts, if there is one

const notices = {
  error(message) {
    const item = document.createElement('li')
    item.textContent = message
    const dismiss = document.createElement('button')
    dismiss.type = 'button'
    dismiss.className = 'dismiss'
    dismiss.textContent = '×'
    dismiss.setAttribute('aria-label', 'Dismiss')
    dismiss.addEventListener('click', () => item.remove())
    item.append(dismiss)
    $('errors').append(item)
  },
  clear() {
    $('errors').replaceChildren()
  },
}

const uploader = createUploader($('uploader'), {
  credential: () => session.credential(),
  onUploaded: (uploadId, file) => followUpload(uploadId, file),
  onError: (message, file) => notices.error(file ? `${file.name}: ${message}` : message),
})

async function followUpload(uploadId, file) {
  try {
    const state = await api.finished(uploadId)
    if (state.status === 'failed') {
      // Refused for what the bytes are (type, size, content): sending them again cannot help, so the file
      // leaves the uploader (Uppy would retry a file marked failed with the next upload) and the notice stays.
      notices.error(`${file.name}: ${state.error.message}`)
      uploader.uppy.removeFile(file.id)
      return
    }
    const record = state.attachment ?? state
    if (!record.target_type || sameTarget(record, currentTarget)) await loadGrid()
  } catch (error) {
    notices.error(`${file.name}: ${error.message}`)
  }
}

function sameTarget(record, target) {
  return target && record.target_type === target.target_type && String(record.target_id) === target.target_id
}

async function loadGrid({ more = false } = {}) {
  if (!currentTarget) return
  const target = currentTarget
  try {
    const page = await api.list(target, more ? nextCursor : null)
    if (target !== currentTarget) return // another target was opened meanwhile
    const records = more ? [...shownRecords, ...page.attachments] : page.attachments
    shownRecords = records
    nextCursor = page.next_cursor ?? null
    renderGrid($('grid'), records, { rename, remove })
    $('grid-title').textContent = `${target.target_type} ${target.target_id}`
    $('grid-empty').hidden = records.length > 0
    $('more').hidden = !nextCursor
  } catch (error) {
    handleApiError(error)
  }
}

async function rename(record, name) {
  try {
    await api.rename(record.id, name)
    await loadGrid()
    return true
  } catch (error) {
    handleApiError(error)
    return false
  }
}

async function remove(record) {
  if (!window.confirm(`Delete ${record.name ?? record.filename}?`)) return
  try {
    await api.remove(record.id)
    await loadGrid()
  } catch (error) {
    handleApiError(error)
  }
}

function handleApiError(error) {
  notices.error(error.message)
  if (error.status === 401) showSignIn()
}

function showSignIn() {
  $('signin').hidden = false
  $('workspace').hidden = true
  $('who').hidden = true
  $('credential').focus()
}

function showWorkspace() {
  $('signin').hidden = true
  $('workspace').hidden = false
  $('who').hidden = false
  $('who-name').textContent = describeCredential(session.credential())
  const saved = session.target()
  if (saved) {
    $('target-type').value = saved.target_type
    $('target-id').value = saved.target_id
    openTarget(saved)
  }
}

function openTarget(target) {
  currentTarget = target
  session.setTarget(target)
  uploader.setTarget(target)
  $('attachments').hidden = false
  loadGrid()
}

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const value = $('credential').value.trim()
  if (!value) return
  notices.clear()
  const candidate = new Api(value)
  try {
    await candidate.whoami()
  } catch (error) {
    notices.error(error.message)
    return
  }
  session.signIn(value)
  api = candidate
  $('credential').value = ''
  showWorkspace()
})

$('signout').addEventListener('click', () => {
  session.signOut()
  api = null
  currentTarget = null
  uploader.setTarget(null)
  uploader.uppy.cancelAll()
  $('grid').replaceChildren()
  showSignIn()
})

$('target-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const target = parseTarget($('target-type').value, $('target-id').value)
  if (!target) {
    notices.error('A target is a type and an id, like Task and 42.')
    return
  }
  notices.clear()
  openTarget(target)
})

$('more').addEventListener('click', () => loadGrid({ more: true }))

if (session.credential()) {
  api = new Api(session.credential())
  showWorkspace()
} else {
  showSignIn()
}
