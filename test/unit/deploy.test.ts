/** The deployment files: linted and checked for what operations rely on (they cannot be built here). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { REPO } from '../helpers/next-app.js'

for (const file of ['deploy/Dockerfile', 'example-next-app/Dockerfile']) {
  test(`${file} passes dockerfilelint`, () => {
    const out = execFileSync(join(REPO, 'node_modules/.bin/dockerfilelint'), [join(REPO, file), '-o', 'json'], { encoding: 'utf8' })
    assert.equal(JSON.parse(out).totalIssues, 0, out)
  })
}

test('the sidecar image runs the tested CLI as a non-root user with a health check', () => {
  const dockerfile = readFileSync(join(REPO, 'deploy/Dockerfile'), 'utf8')
  const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  assert.match(final, /^USER node$/m)
  assert.match(final, /^HEALTHCHECK .*\n.*\/healthz/m)
  // Exec form, so SIGTERM reaches node directly.
  assert.match(final, /^CMD \["node", "dist\/sidecar\/cli\.js"\]$/m)
  assert.match(dockerfile, /npm prune --omit=dev/)
})

test('the Kubernetes manifest has probes, resources, a drain delay and a CPU autoscaler', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8')).map((d) => d.toJS())
  const kinds = docs.map((d) => d.kind)
  assert.deepEqual(kinds, ['ConfigMap', 'Deployment', 'Service', 'Ingress', 'HorizontalPodAutoscaler'])
  const deployment = docs.find((d) => d.kind === 'Deployment')
  const container = deployment.spec.template.spec.containers[0]
  assert.equal(container.readinessProbe.httpGet.path, '/readyz')
  assert.equal(container.livenessProbe.httpGet.path, '/healthz')
  assert.ok(container.resources.requests.cpu)
  const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]))
  // The grace period must cover the drain delay plus the in-flight deadline (25 s by default).
  assert.ok(deployment.spec.template.spec.terminationGracePeriodSeconds * 1000 > Number(env.SHUTDOWN_DELAY_MS) + 25_000)
  const hpa = docs.find((d) => d.kind === 'HorizontalPodAutoscaler')
  assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name)
  assert.equal(hpa.spec.metrics[0].resource.name, 'cpu')
  const ingress = docs.find((d) => d.kind === 'Ingress')
  const imagePath = ingress.spec.rules[0].http.paths.find((p: { path: string }) => p.path === '/_next/image')
  assert.equal(imagePath.pathType, 'Exact')
})

test('metrics are scraped from their own port: manifest, ServiceMonitor, pod annotations and docker-compose agree', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8')).map((d) => d.toJS())
  const deployment = docs.find((d) => d.kind === 'Deployment')
  const service = docs.find((d) => d.kind === 'Service')
  const container = deployment.spec.template.spec.containers[0]
  const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]))
  const metricsPort = container.ports.find((p: { name: string }) => p.name === 'metrics').containerPort
  assert.equal(Number(env.METRICS_PORT), metricsPort)
  assert.equal(Number(deployment.spec.template.metadata.annotations['prometheus.io/port']), metricsPort)
  // The Ingress only routes the image port; the probes test the port that serves images.
  assert.equal(container.readinessProbe.httpGet.port, 'http')
  const monitor = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/servicemonitor.yaml'), 'utf8')).map((d) => d.toJS())[0]
  assert.equal(monitor.kind, 'ServiceMonitor')
  assert.deepEqual(monitor.spec.selector.matchLabels, service.metadata.labels)
  assert.ok(service.spec.ports.some((p: { name: string; targetPort: string }) => p.name === monitor.spec.endpoints[0].port && p.targetPort === 'metrics'))
  assert.match(readFileSync(join(REPO, 'deploy/docker-compose.yml'), 'utf8'), /METRICS_PORT: "9464"/)
})
