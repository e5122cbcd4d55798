// Builds the console into services/console/static/ (the package ships it; nobody else needs npm):
// console.js and console.css (Uppy and the console, minified), index.html, the bundled packages' licences, and
// BUILD, the SHA-256 of the sources and the lockfile it was built from (tests/test_console.py checks it is fresh).
import { createHash } from 'node:crypto'
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as esbuild from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'services', 'console', 'static')

/** What the bundle is made of: every source file and the lockfile, by name and content, in a fixed order. */
export async function sourceDigest() {
  const hash = createHash('sha256')
  const names = (await readdir(join(here, 'src'))).sort().map((name) => `src/${name}`)
  for (const name of [...names, 'package-lock.json', 'build.mjs']) {
    hash.update(`${name}\n`)
    hash.update(await readFile(join(here, name)))
  }
  return hash.digest('hex')
}

await mkdir(out, { recursive: true })
await esbuild.build({
  entryPoints: { console: join(here, 'src', 'main.js') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: out,
  legalComments: 'external',
  logLevel: 'warning',
})
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'))
await writeFile(join(out, 'BUILD'), `${await sourceDigest()}\n`)
