import type { ErrorRequestHandler, NextFunction, Request, Response } from 'express'
import type { Logger } from 'pino'
import { ImageError } from '../errors.js'

/** The one place an error becomes a response: an ImageError → its status and Next's message. */
export function renderError(log: Logger): ErrorRequestHandler {
  return (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (err instanceof ImageError) {
      if (err.statusCode >= 500) log.error({ err, url: req.originalUrl }, 'image request failed')
      else log.debug({ err, url: req.originalUrl }, 'image request rejected')
      for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value)
      // As Next: the bare message, chunked (no Content-Length, no Content-Type).
      res.status(err.statusCode).write(err.message)
      res.end()
      return
    }
    // Body-parser style client errors (e.g. malformed URLs) carry their own 4xx status.
    const status = (err as { status?: number } | undefined)?.status
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).end('Bad Request')
      return
    }
    log.error({ err, url: req.originalUrl }, 'unexpected error')
    res.status(500).end('Internal Server Error')
  }
}
