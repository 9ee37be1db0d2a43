import type { Attributes, Context, Span, TextMapPropagator, Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { redactError, redactText } from './credentials.js'

/**
 * OpenTelemetry tracing, off unless the standard environment asks for it. The OpenTelemetry
 * packages are imported only then, and every function below is a single branch when tracing is
 * off: the request path pays nothing for it.
 *
 * One SERVER span per request (its parent taken from the caller's W3C `traceparent`), with
 * children for the cache lookup, lock waits, the upstream fetch (whose request carries the trace
 * on), the transform and the store write.
 *
 * The trace context is passed along explicitly (a `TraceContext` argument) instead of through
 * OpenTelemetry's AsyncLocalStorage context manager: on Node 20 that one turns on async hooks for
 * every promise of the process once a single request is sampled (bench/results/tracing.md).
 */

type Api = typeof import('@opentelemetry/api')

/** The trace position of a piece of work: pass it to `traced` and `traceHeaders`. Undefined: not traced. */
export type TraceContext = Context

/** The loaded API, this service's tracer and the W3C propagator, once tracing has started. */
let active: { api: Api; tracer: Tracer; propagator: TextMapPropagator } | undefined

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
  // sdk-trace's TracerProvider: the Node one of OpenTelemetry 2 differed only in registering a context manager, which is not used.
  const [api, { TracerProvider, BatchSpanProcessor, ConsoleSpanExporter }, { OTLPTraceExporter }, resources, { W3CTraceContextPropagator }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/core'),
  ])
  const resource = resources
    .resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || 'next-image-sidecar' })
    .merge(resources.detectResources({ detectors: [resources.envDetector] }))
  const exporter = exporterKind === 'console' ? new ConsoleSpanExporter() : new OTLPTraceExporter()
  // Not registered globally: no context manager (see the top of this file), nothing for other code to pick up.
  const provider = new TracerProvider({ resource, spanProcessors: [new BatchSpanProcessor({ exporter })] })
  active = { api, tracer: provider.getTracer('next-image-sidecar'), propagator: new W3CTraceContextPropagator() }
  log.info({ exporter: exporterKind, endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT }, 'tracing on')
  return {
    async shutdown() {
      await provider.shutdown().catch((err: unknown) => log.warn({ err }, 'could not flush the last spans'))
      active = undefined
    },
  }
}

/** A request's span: its context for the work it starts, and `finish` with the response's outcome. */
export interface RequestSpan {
  context: TraceContext
  finish(status: number, attributes: Attributes): void
}

/**
 * A SERVER span for an incoming request, child of the caller's `traceparent`; undefined when off,
 * and when the sampler leaves the request out (its work then creates no spans at all).
 */
export function startRequestSpan(method: string, route: string, headers: Record<string, string | string[] | undefined>, attributes: Attributes): RequestSpan | undefined {
  if (!active) return undefined
  const { api, tracer, propagator } = active
  const parent = propagator.extract(api.ROOT_CONTEXT, headers, api.defaultTextMapGetter)
  const span = tracer.startSpan(`${method} ${route}`, { kind: api.SpanKind.SERVER, attributes: { 'http.request.method': method, 'http.route': route, ...attributes } }, parent)
  if (!span.isRecording()) return undefined
  return {
    context: api.trace.setSpan(parent, span),
    finish(status, more) {
      span.setAttributes({ 'http.response.status_code': status, ...more })
      if (status >= 500) span.setStatus({ code: api.SpanStatusCode.ERROR })
      span.end()
    },
  }
}

/**
 * Runs `fn` in a child span of `parent` (INTERNAL, or CLIENT for outgoing requests); without a
 * parent (tracing off, an unsampled request) it just runs `fn`. `fn` gets the span, to add
 * attributes, and the span's context, for work of its own. A failure is recorded and rethrown unchanged.
 */
export async function traced<T>(
  parent: TraceContext | undefined,
  name: string,
  attributes: Attributes,
  fn: (span: Span | undefined, context: TraceContext | undefined) => Promise<T>,
  client = false,
): Promise<T> {
  if (!active || !parent) return fn(undefined, undefined)
  const { api, tracer } = active
  const span = tracer.startSpan(name, { kind: client ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL, attributes }, parent)
  try {
    return await fn(span, api.trace.setSpan(parent, span))
  } catch (err) {
    span.recordException(redactError(err) as Error)
    const status = (err as { statusCode?: number }).statusCode
    if (status !== undefined) span.setAttribute('http.response.status_code', status)
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: redactText(String((err as Error | undefined)?.message)) })
    throw err
  } finally {
    span.end()
  }
}

/** A trace position as W3C headers (`traceparent`, `tracestate`) for an outgoing request; {} when not traced. */
export function traceHeaders(context: TraceContext | undefined): Record<string, string> {
  if (!active || !context) return {}
  const headers: Record<string, string> = {}
  active.propagator.inject(context, headers, active.api.defaultTextMapSetter)
  return headers
}
