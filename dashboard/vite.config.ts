import { defineConfig } from 'vitest/config'
import react from '@vitejs/plugin-react'

// The dashboard is served by `ccproxy admin` from the same origin as
// /api/v1 (go:embed of dist/). `npm run dev` proxies the API to a running
// `ccproxy dev` (CCPROXY_ADMIN, default 127.0.0.1:8081).
export default defineConfig({
  plugins: [react()],
  build: {
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 700,
  },
  server: {
    proxy: { '/api': 'http://' + (process.env.CCPROXY_ADMIN ?? '127.0.0.1:8081') },
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
})
