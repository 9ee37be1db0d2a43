// Runs commands as whole process trees, for the demo: each command leads its own process group, so
// stopping it reaches everything it started (`npx` → `sh -c` → `next start`: a signal to the first
// alone never reaches the server, which kept serving, orphaned, after the demo had exited).
import { spawn } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'

/** Whether any process of the group led by `pid` is still alive. */
export function groupAlive(pid) {
  // A command that could not be started (ENOENT, EACCES) has no pid and no group.
  if (pid === undefined) return false
  try {
    process.kill(-pid, 0)
    return true
  } catch (err) {
    // EPERM: a member exists but is not ours to signal; it is still alive.
    return err.code === 'EPERM'
  }
}

function signalGroup(pid, signal) {
  if (pid === undefined) return
  try {
    process.kill(-pid, signal)
  } catch (err) {
    if (err.code !== 'ESRCH') throw err
  }
}

/**
 * Starts `commands` ([{ name, command, args, options }]) and supervises them until every tree is gone:
 * when one exits, or the process gets SIGINT/SIGTERM, every group gets SIGTERM, and SIGKILL if still
 * alive after `graceMs`. Resolves with `signal` (the one received, if that started the stop) and `code`, the
 * exit code to use: the first command that exited on its own
 * decides (its code; 1 if a signal killed it); a stop asked for by a signal is 0 if every command then
 * ended cleanly (exit 0, or the SIGTERM it was sent), else the first failure's code, or 1 when a tree
 * had to be killed.
 * `onStart(children)` gets each command's name, pid and ChildProcess once all are spawned.
 */
export function supervise(commands, { graceMs = 10_000, onStart } = {}) {
  return new Promise((resolve) => {
    const children = commands.map(({ name, command, args = [], options = {} }) => ({
      name,
      child: spawn(command, args, { stdio: 'inherit', ...options, detached: true }),
      exit: undefined,
    }))
    let cause // 'signal', or the entry whose exit started the stop
    let forced = false // a tree outlived its SIGTERM by graceMs
    const stop = (why) => {
      if (cause !== undefined) return
      cause = why
      for (const { child } of children) signalGroup(child.pid, 'SIGTERM')
      const killer = setTimeout(() => {
        for (const { child } of children) {
          if (!groupAlive(child.pid)) continue
          forced = true
          signalGroup(child.pid, 'SIGKILL')
        }
      }, graceMs)
      // Done when every group is empty, the leaders' descendants included, not only the leaders.
      waitGroupsGone(children.map((c) => c.child.pid)).then(() => {
        clearTimeout(killer)
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
        resolve({ code: forced && cause === 'signal' ? 1 : exitCode(children, cause), signal: received })
      })
    }
    let received
    const onSignal = (signal) => {
      received ??= signal
      stop('signal')
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    for (const entry of children) {
      entry.child.on('error', (err) => {
        entry.exit = { code: 127, signal: null, error: err }
        stop(entry)
      })
      entry.child.on('exit', (code, signal) => {
        entry.exit = { code, signal }
        stop(entry)
      })
    }
    onStart?.(children.map(({ name, child }) => ({ name, pid: child.pid, child })))
  })
}

async function waitGroupsGone(pids) {
  while (pids.some(groupAlive)) await sleep(50)
}

function exitCode(children, cause) {
  const codeOf = (exit) => (exit.code ?? 1) // killed by a signal: a failure
  if (cause !== 'signal') return codeOf(cause.exit) === 0 ? 0 : codeOf(cause.exit)
  // Stopped on request: a SIGTERM we sent is a clean end.
  const failed = children.find(({ exit }) => exit && !(exit.code === 0 || exit.signal === 'SIGTERM' || exit.code === 143))
  return failed ? codeOf(failed.exit) : 0
}
