// Uppy: the Dashboard (drag and drop of files and folders, per-file progress, retry) over the Tus plugin,
// uploading to attachd's tus endpoint with the target in Upload-Metadata and the bearer credential.

import Uppy from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import Tus from '@uppy/tus'

import { apiMessage, uploadIdOf } from './format.js'

export const TUS_ENDPOINT = '/v1/uploads/tus'
// Each PATCH carries at most this much: a cut connection costs at most one chunk, and on S3 storage each
// chunk is a whole part of the multipart upload (S3's minimum part size is 5 MiB).
export const CHUNK_BYTES = 5 * 1024 * 1024

/** The API's own words for a failed tus request: its error shape's message, else what the client said. */
function tusErrorMessage(error, response) {
  const xhr = response?.body?.xhr ?? error?.originalResponse?.getUnderlyingObject?.()
  return (xhr && apiMessage(xhr.responseText)) ?? error?.message ?? 'the upload failed'
}

/**
 * The uploader in `target` (an element). `credential()` is read at each upload; `onUploaded(uploadId, file)`
 * runs when a file's last byte is stored, `onError(message, file)` when one fails.
 */
export function createUploader(target, { credential, onUploaded, onError }) {
  const uppy = new Uppy({ autoProceed: true, id: 'attachd' })
  uppy.use(Dashboard, {
    target,
    inline: true,
    height: 320,
    width: '100%',
    fileManagerSelectionType: 'both',
    proudlyDisplayPoweredByUppy: false,
    showRemoveButtonAfterComplete: true,
    note: 'Files and folders: each file becomes an attachment of the target.',
    disabled: true,
  })
  uppy.use(Tus, {
    endpoint: TUS_ENDPOINT,
    chunkSize: CHUNK_BYTES,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
    // attachd reads target_type, target_id, name and (Uppy adds it from name) filename; nothing else.
    allowedMetaFields: ['target_type', 'target_id', 'name'],
    headers: () => ({ Authorization: `Bearer ${credential()}` }),
  })
  uppy.on('upload-success', (file, response) => {
    if (response?.uploadURL) onUploaded(uploadIdOf(response.uploadURL), file)
  })
  uppy.on('upload-error', (file, error, response) => {
    const message = tusErrorMessage(error, response)
    if (file) uppy.setFileState(file.id, { error: message })
    onError(message, file)
  })
  return {
    /** New files go to this target ({target_type, target_id}); null: nowhere, the drop zone is off. */
    setTarget(value) {
      if (value) uppy.setMeta(value)
      uppy.getPlugin('Dashboard').setOptions({ disabled: !value })
    },
    uppy,
  }
}
