import sharp from 'sharp'
import { ConfigError } from '../errors.js'
import { configureSharp } from '../image/transform.js'
import type { ResolvedNextConfig } from '../next/images-config.js'
import { defaultConcurrency, planMemory, readContainerLimits, type ContainerLimits, type MemoryPlan } from '../runtime/limits.js'
import type { SidecarOptions } from './options.js'

export interface DerivedLimits extends MemoryPlan {
  container: ContainerLimits
  concurrency: number
  libvipsThreads: number
}

export function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new ConfigError(`${name}: expected an integer >= 1, received ${value}`)
  return value
}

/**
 * What this process may use, from the container (or host) limits and the options: the memory plan,
 * the transforms at once and libvips' threads (configured on sharp here, as it will really run).
 */
export function deriveLimits(options: SidecarOptions, config: ResolvedNextConfig): DerivedLimits {
  const workers = options.clusterShare?.count ?? 1
  const container = readContainerLimits()
  const whole = planMemory(container, {
    memoryLimitBytes: options.memoryLimit === undefined ? undefined : positiveInt('memoryLimit', options.memoryLimit),
    hotCacheBytes: options.hotCacheSize,
  })
  // Each worker of a cluster is a whole process with its own runtime and hot tier: it plans as a
  // container of its share of the memory, so the workers together fit the limit (reported whole).
  const memoryPlan: MemoryPlan =
    workers === 1 ? whole : { ...planMemory(container, { memoryLimitBytes: Math.floor(whole.limitBytes / workers), hotCacheBytes: options.hotCacheSize }), limitBytes: whole.limitBytes }
  const concurrency = positiveInt('concurrency', options.concurrency ?? defaultConcurrency(container.cpus, workers))
  // libvips' threads per transform: half of this process's share of the CPUs (Next's own default is
  // all cores); Next's imgOptConcurrency, when set, wins. Recorded as sharp really runs.
  configureSharp(config.sharp, Math.max(Math.floor(container.cpus / workers / 2), 1))
  return { container, ...memoryPlan, concurrency, libvipsThreads: sharp.concurrency() }
}
