/** The deployment files: linted and checked for what operations rely on (they cannot be built here). */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'
import { REPO } from '../helpers/next-app.js'
import { parseNextVersion } from '../../sidecar/next/next-version.js'

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
  assert.match(final, /^CMD \["node", "dist\/sidecar\/cli\/main\.js"\]$/m)
  assert.match(dockerfile, /npm prune --omit=dev/)
})

test('the Kubernetes manifest has probes, resources, a drain delay and a CPU autoscaler', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8')).map((d) => d.toJS())
  const kinds = docs.map((d) => d.kind)
  assert.deepEqual(kinds, ['ConfigMap', 'Deployment', 'Service', 'Ingress', 'HorizontalPodAutoscaler', 'PodDisruptionBudget'])
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
})

const manifest = () => parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8')).map((d) => d.toJS())

test('the Ingress sends /_next/image and /_next/image/ (trailingSlash apps), exactly, to the sidecar', () => {
  const ingress = manifest().find((d) => d.kind === 'Ingress')
  const toSidecar = ingress.spec.rules[0].http.paths.filter((p: { backend: { service: { name: string } } }) => p.backend.service.name === 'next-image-sidecar')
  assert.deepEqual(toSidecar.map((p: { path: string; pathType: string }) => [p.path, p.pathType]).sort(), [['/_next/image', 'Exact'], ['/_next/image/', 'Exact']])
})

test('the Deployment has no replicas of its own: the HPA owns the count (an apply would reset it)', () => {
  const docs = manifest()
  assert.equal(docs.find((d) => d.kind === 'Deployment').spec.replicas, undefined)
  assert.ok(docs.find((d) => d.kind === 'HorizontalPodAutoscaler').spec.minReplicas >= 2)
})

test('a PodDisruptionBudget keeps a replica serving through drains and upgrades', () => {
  const docs = manifest()
  const pdb = docs.find((d) => d.kind === 'PodDisruptionBudget')
  assert.ok(pdb, 'a PodDisruptionBudget')
  assert.equal(pdb.apiVersion, 'policy/v1')
  assert.deepEqual(pdb.spec.selector.matchLabels, docs.find((d) => d.kind === 'Deployment').spec.selector.matchLabels)
  // At least one pod stays, and the HPA's minimum still lets one be evicted (a drain never blocks forever).
  assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < docs.find((d) => d.kind === 'HorizontalPodAutoscaler').spec.minReplicas)
})

test('the pod is admissible under the restricted Pod Security Standard', () => {
  // https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted, field by field.
  const pod = manifest().find((d) => d.kind === 'Deployment').spec.template.spec
  const allowedVolumes = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']
  for (const volume of pod.volumes) assert.ok(Object.keys(volume).every((k) => k === 'name' || allowedVolumes.includes(k)), volume.name)
  assert.ok(!pod.hostNetwork && !pod.hostPID && !pod.hostIPC)
  for (const container of [...pod.containers, ...(pod.initContainers ?? [])]) {
    const sc = { ...pod.securityContext, ...container.securityContext }
    assert.equal(sc.runAsNonRoot, true, container.name)
    assert.notEqual(sc.runAsUser, 0)
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false, `${container.name}: allowPrivilegeEscalation`)
    assert.ok(!container.securityContext?.privileged)
    assert.deepEqual(container.securityContext?.capabilities?.drop, ['ALL'], `${container.name}: drops ALL capabilities`)
    assert.ok((container.securityContext?.capabilities?.add ?? []).every((c: string) => c === 'NET_BIND_SERVICE'))
    assert.ok(['RuntimeDefault', 'Localhost'].includes(sc.seccompProfile?.type), `${container.name}: seccompProfile`)
    assert.ok(!container.ports.some((p: { hostPort?: number }) => p.hostPort))
  }
})

test('the sidecar container has a CPU limit, and requests equal to its limits (it plans with the limits)', () => {
  const container = manifest().find((d) => d.kind === 'Deployment').spec.template.spec.containers[0]
  assert.ok(container.resources.limits.cpu, 'limits.cpu: without it concurrency and libvips threads follow the node’s cores')
  assert.ok(container.resources.limits.memory)
  assert.deepEqual(container.resources.requests, container.resources.limits)
})

test('the deploy files name the Next line (the config is mounted without a next package beside it)', () => {
  const container = manifest().find((d) => d.kind === 'Deployment').spec.template.spec.containers[0]
  const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]))
  assert.match(env.NEXT_VERSION, /^(15|16)(\.\d+){0,2}$/)
  const compose = parse(readFileSync(join(REPO, 'deploy/docker-compose.yml'), 'utf8'))
  assert.match(String(compose.services.sidecar.environment.NEXT_VERSION), /^(15|16)(\.\d+){0,2}$/)
  // Each says how to choose it.
  assert.match(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8'), /#.*NEXT_VERSION|NEXT_VERSION.*\n\s*#|#.*Next line/i)
  assert.match(readFileSync(join(REPO, 'deploy/docker-compose.yml'), 'utf8'), /#[^\n]*next/i)
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

describe('docs/deploy.md’s walkthrough names only what exists', () => {
  const doc = readFileSync(join(REPO, 'docs/deploy.md'), 'utf8')
  const section = doc.slice(doc.indexOf('## Run it:'), doc.indexOf('\n## ', doc.indexOf('## Run it:') + 1))
  const commands = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map(([, block]) => block!).join('\n')
  const help = execFileSync(process.execPath, [join(REPO, 'dist/sidecar/cli/main.js'), '--help'], { encoding: 'utf8' })

  test('the walkthrough has its commands (docker build and run, compose, kubectl)', () => {
    for (const command of ['docker build', 'docker run', 'docker compose', 'kubectl apply']) assert.ok(commands.includes(command), command)
  })
  test('every repository file a command names exists', () => {
    const paths = [...commands.matchAll(/(?:^|\s)((?:deploy|example-next-app)\/[\w./-]+)/g)].map(([, path]) => path!)
    assert.ok(paths.length >= 4, paths.join(' '))
    for (const path of paths) assert.ok(existsSync(join(REPO, path)), path)
  })
  test('every environment variable `docker run` sets is one the CLI reads (its --help names it)', () => {
    const names = [...commands.matchAll(/-e ([A-Z_]+)=/g)].map(([, name]) => name!)
    assert.ok(names.length >= 3)
    for (const name of names) assert.match(help, new RegExp(`(^|\\s)${name}(\\s|$)`, 'm'), `${name} is not in --help`)
  })
  test('the NEXT_VERSION it shows is a value the CLI accepts, and the compose profile and metrics port are the compose file’s', () => {
    const version = commands.match(/NEXT_VERSION=([\w.]+)/)?.[1]
    assert.ok(version)
    assert.equal(parseNextVersion(version, 'NEXT_VERSION'), '16.5')
    const compose = parse(readFileSync(join(REPO, 'deploy/docker-compose.yml'), 'utf8'))
    assert.ok(section.includes('--profile gateway') && compose.services.gateway.profiles.includes('gateway'))
    assert.equal(compose.services.sidecar.environment.METRICS_PORT, section.match(/`\/metrics` is on port (\d+)/)?.[1])
  })
})
