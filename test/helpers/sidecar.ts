import { pino } from 'pino'
import { createSidecar, type Sidecar } from '../../sidecar/server/app.js'
import type { SidecarOptions } from '../../sidecar/server/options.js'

export const silentLogger = pino({ level: 'silent' })

/** A sidecar on the in-memory store with a silent logger; close it in `after`. */
export function testSidecar(options: Partial<SidecarOptions> & Pick<SidecarOptions, 'frontend'>): Sidecar {
  return createSidecar({ cache: 'memory://', logger: silentLogger, maxAttempts: 1, ...options })
}

/** next.config allowing absolute images from a local test upstream (private IPs allowed on purpose). */
export function localRemoteConfig(port: number, images: Record<string, unknown> = {}) {
  return {
    images: {
      dangerouslyAllowLocalIP: true,
      remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1', port: String(port) }],
      ...images,
    },
  }
}
