// The target's attachments as a grid of cards: thumbnail, name, size and type, and what can be done to each.
// Built with DOM calls and textContent only: names and types are what uploaders typed.

import { formatSize } from './format.js'

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value != null) node.setAttribute(name, value)
  }
  node.append(...children)
  return node
}

function preview(record) {
  const thumbnail = record.file?.thumbnail
  if (thumbnail) {
    return element('img', { class: 'thumb', src: thumbnail, alt: '', width: '72', height: '48', loading: 'lazy' })
  }
  const extension = (record.filename ?? '').split('.').pop()
  const label = extension && extension !== record.filename ? extension.slice(0, 5) : record.attachment_type
  return element('div', { class: 'thumb placeholder', 'aria-hidden': 'true' }, [label ?? 'file'])
}

function nameField(record, actions) {
  const name = element('span', { class: 'name', title: record.name ?? '' }, [record.name ?? record.filename ?? ''])
  const input = element('input', { class: 'rename-input', type: 'text', 'aria-label': 'New name', hidden: '' })
  input.value = record.name ?? ''
  const save = async () => {
    const value = input.value.trim()
    if (!value || value === record.name) {
      input.hidden = true
      name.hidden = false
      return
    }
    input.disabled = true
    const ok = await actions.rename(record, value)
    input.disabled = false
    if (ok) return // the grid is drawn again with the renamed record
    input.focus()
  }
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') save()
    if (event.key === 'Escape') {
      input.value = record.name ?? ''
      input.hidden = true
      name.hidden = false
    }
  })
  const startRenaming = () => {
    name.hidden = true
    input.hidden = false
    input.focus()
    input.select()
  }
  return { nodes: [name, input], startRenaming }
}

function card(record, actions) {
  const { nodes, startRenaming } = nameField(record, actions)
  const details = element('span', { class: 'details' }, [
    [formatSize(record.size), record.content_type].filter(Boolean).join(' · '),
  ])
  const download = record.file?.original
    ? element('a', { class: 'download', href: record.file.original, download: record.filename ?? '' }, ['Download'])
    : element('a', { class: 'download', href: record.url, rel: 'noreferrer' }, ['Open'])
  const rename = element('button', { type: 'button', class: 'rename' }, ['Rename'])
  rename.addEventListener('click', startRenaming)
  const remove = element('button', { type: 'button', class: 'delete' }, ['Delete'])
  remove.addEventListener('click', () => actions.remove(record))
  return element('li', { class: 'card', 'data-id': record.id }, [
    preview(record),
    ...nodes,
    details,
    element('div', { class: 'actions' }, [download, rename, remove]),
  ])
}

/** Draws `records` into the list `root`; `actions.rename(record, name)` and `actions.remove(record)` act. */
export function renderGrid(root, records, actions) {
  root.replaceChildren(...records.map((record) => card(record, actions)))
}
