import type { Attributes, Span, Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'

/**
 * OpenTelemetry tracing, off unless the standard environment asks for it. The OpenTelemetry
 * packages are imported only then, and every function below is a single branch when tracing is
 * off: the request path pays nothing for it.
 *
 * One SERVER span per request (its parent taken from the caller's W3C `traceparent`), with
 * children for the cache lookup, lock waits, the upstream fetch (whose request carries the trace
 * on), the transform and the store write.
 */

type Api = typeof import('@opentelemetry/api')

/** The loaded API and this service's tracer, once tracing has started. */
let active: { api: Api; tracer: Tracer } | undefined

/**
 * Whether the environment turns tracing on, by the OpenTelemetry conventions: `OTEL_SDK_DISABLED`
 * wins; `OTEL_TRACES_EXPORTER` (`otlp` or `console`; `none` is off); else an OTLP endpoint
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
 */
export function tracingExporter(env: NodeJS.ProcessEnv): 'otlp' | 'console' | undefined {
  if (env.OTEL_SDK_DISABLED?.toLowerCase() === 'true') return undefined
  const exporter = env.OTEL_TRACES_EXPORTER?.trim().toLowerCase()
  if (exporter === 'none') return undefined
  if (exporter === 'console') return 'console'
  if (exporter === 'otlp') return 'otlp'
  return env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ? 'otlp' : undefined
}

export interface TracingHandle {
  /** Sends the spans still buffered and stops exporting. */
  shutdown(): Promise<void>
}

/**
 * Starts tracing when the environment asks for it (see `tracingExporter`): OTLP over HTTP to the
 * standard endpoint variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
 * `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` apply as usual). Returns
 * undefined, having loaded nothing, when it does not.
 */
export async function startTracing(log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<TracingHandle | undefined> {
  const exporterKind = tracingExporter(env)
  if (!exporterKind || active) return undefined
  const [api, { NodeTracerProvider, BatchSpanProcessor, ConsoleSpanExporter }, { OTLPTraceExporter }, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ])
  const resource = resources
    .resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || 'next-image-sidecar' })
    .merge(resources.detectResources({ detectors: [resources.envDetector] }))
  const exporter = exporterKind === 'console' ? new ConsoleSpanExporter() : new OTLPTraceExporter()
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(exporter)] })
  // Registers the AsyncLocalStorage context manager and the W3C trace-context propagator.
  provider.register()
  active = { api, tracer: provider.getTracer('next-image-sidecar') }
  log.info({ exporter: exporterKind, endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT }, 'tracing on')
  return {
    async shutdown() {
      await provider.shutdown().catch((err: unknown) => log.warn({ err }, 'could not flush the last spans'))
      active = undefined
    },
  }
}

/** What a request span needs from the HTTP layer; `finish` ends it with the response's outcome. */
export interface RequestSpan {
  /** Runs the rest of the request inside the span's context, so its children attach to it. */
  run(fn: () => void): void
  finish(status: number, attributes: Attributes): void
}

/** A SERVER span for an incoming request, child of the caller's `traceparent`; undefined when off. */
export function startRequestSpan(method: string, route: string, headers: Record<string, string | string[] | undefined>, attributes: Attributes): RequestSpan | undefined {
  if (!active) return undefined
  const { api, tracer } = active
  const parent = api.propagation.extract(api.ROOT_CONTEXT, headers)
  const span = tracer.startSpan(`${method} ${route}`, { kind: api.SpanKind.SERVER, attributes: { 'http.request.method': method, 'http.route': route, ...attributes } }, parent)
  // A request the sampler left out runs outside any span: its children then cost one branch each.
  if (!span.isRecording()) return undefined
  const ctx = api.trace.setSpan(parent, span)
  return {
    run: (fn) => api.context.with(ctx, fn),
    finish(status, more) {
      span.setAttributes({ 'http.response.status_code': status, ...more })
      if (status >= 500) span.setStatus({ code: api.SpanStatusCode.ERROR })
      span.end()
    },
  }
}

/**
 * Runs `fn` in a child span of the current one (INTERNAL, or CLIENT for outgoing requests).
 * `fn` may add attributes through the span it is given (undefined when tracing is off). A failure
 * is recorded on the span and rethrown unchanged.
 */
export function traced<T>(name: string, attributes: Attributes, fn: (span: Span | undefined) => Promise<T>, client = false): Promise<T> {
  if (!active) return fn(undefined)
  const { api, tracer } = active
  // Only work inside a sampled request's span is traced (not unsampled requests, not work without one).
  if (!api.trace.getActiveSpan()?.isRecording()) return fn(undefined)
  return tracer.startActiveSpan(name, { kind: client ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL, attributes }, async (span) => {
    try {
      return await fn(span)
    } catch (err) {
      span.recordException(err as Error)
      const status = (err as { statusCode?: number }).statusCode
      if (status !== undefined) span.setAttribute('http.response.status_code', status)
      span.setStatus({ code: api.SpanStatusCode.ERROR, message: (err as Error).message })
      throw err
    } finally {
      span.end()
    }
  })
}

/** The current trace as W3C headers (`traceparent`, `tracestate`) for an outgoing request; {} when off. */
export function traceHeaders(): Record<string, string> {
  if (!active) return {}
  const headers: Record<string, string> = {}
  active.api.propagation.inject(active.api.context.active(), headers)
  return headers
}
