// Vite empties dist/ on every build; the marker file keeps the directory in
// git so that `go build` works in a clean clone (go:embed needs a file).
// Every built asset is also written gzip-compressed beside itself, so the Go
// server sends the compressed bytes without compressing per request.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'

const dist = new URL('../dist/', import.meta.url).pathname
writeFileSync(join(dist, '.gitkeep'), '')

let firstPage = 0
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) {
      walk(p)
      continue
    }
    if (!/\.(js|css|html|svg|json)$/.test(name)) continue
    const gz = gzipSync(readFileSync(p), { level: 9 })
    writeFileSync(p + '.gz', gz)
  }
}
walk(dist)

// The first page's weight: index.html and what it loads eagerly.
const html = readFileSync(join(dist, 'index.html'), 'utf8')
const eager = [...html.matchAll(/(?:src|href)="\/([^"]+\.(?:js|css))"/g)].map((m) => m[1])
for (const f of ['index.html', ...eager]) firstPage += statSync(join(dist, f + '.gz')).size
console.log(`first page: ${(firstPage / 1024).toFixed(1)} KB gzip (${eager.length + 1} files)`)
