import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERRORS } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import { ApiError } from './errors.ts';

/**
 * What fails before a request reaches a route: a URL the router cannot decode, a
 * parameter longer than the router takes, HTTP a parser refuses. The first two are
 * made into ordinary requests, so the auth hooks, rate limiter, error handler and
 * audit see them like any other; only bytes that are not a request at all are
 * answered here without those.
 */

/**
 * Longer than any request line Node accepts (its header limit is 16 KiB), so the
 * router never answers 414 by itself: route schemas say how long an id may be.
 */
export const MAX_PARAM_LENGTH = 64 * 1024;

const kBadUrl = Symbol('vmkit.badUrl');
type MarkedRequest = IncomingMessage & { [kBadUrl]?: true };

function decodes(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Fastify's rewriteUrl: a path whose percent-encoding does not decode (`%ZZ`, bytes
 * that are not UTF-8) gets each `%` escaped, so the router matches it literally and
 * the request runs through the hooks; `badUrlError` then refuses it with a 400.
 */
export function markBadUrl(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (decodes(path)) return url;
  (req as MarkedRequest)[kBadUrl] = true;
  return path.replaceAll('%', '%25') + (q === -1 ? '' : url.slice(q));
}

/** The 400 for a request whose path did not decode; undefined for the rest. */
export function badUrlError(request: FastifyRequest): ApiError | undefined {
  if ((request.raw as MarkedRequest)[kBadUrl] !== true) return undefined;
  return new ApiError('invalid_request', 'Invalid request: the URL path is not valid percent-encoded UTF-8.');
}

function body(key: ErrorKey, message: string): string {
  return JSON.stringify({ error: key, message });
}

/**
 * Fastify's frameworkErrors: errors the router raises before any hook. With the URL
 * rewrite and MAX_PARAM_LENGTH none is expected; if one comes, it still gets the
 * error shape with a registered key and a log line.
 */
export function frameworkError(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const key: ErrorKey = err.code === 'FST_ERR_BAD_URL' || err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'invalid_request' : 'internal';
  request.log.warn({ err, url: request.url }, 'router refused the request');
  void reply
    .code(ERRORS[key].status)
    .type('application/json; charset=utf-8')
    .header('x-request-id', request.id)
    .send(body(key, key === 'invalid_request' ? 'Invalid request: the URL cannot be routed.' : ERRORS.internal.message));
}

/**
 * Fastify's clientErrorHandler: bytes Node's HTTP parser refused (not a request, so
 * no hook runs). Answered in the error shape and logged with the peer address, then
 * the connection closes.
 */
export function clientErrorHandler(log: FastifyBaseLogger): (err: NodeJS.ErrnoException, socket: Socket) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    let status = 400;
    let text: string;
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = ERRORS.request_timeout.status;
      text = body('request_timeout', ERRORS.request_timeout.message);
    } else if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = ERRORS.headers_too_large.status;
      text = body('headers_too_large', ERRORS.headers_too_large.message);
    } else {
      text = body('invalid_request', 'Invalid request: this is not well-formed HTTP.');
    }
    log.info({ code: err.code, remoteAddress: socket.remoteAddress, status }, 'refused malformed HTTP');
    if (socket.writable) {
      const reason = status === 408 ? 'Request Timeout' : status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
      socket.write(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
          `Content-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${text}`,
      );
    }
    socket.destroy(err);
  };
}
