import { ERRORS } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';

/**
 * The one error class routes and services throw for a client-visible failure. The
 * error handler in app.ts turns it into `{"error": key, "message": sentence, ...extra}`
 * with the status of the key in the registry of @vmkit/protocol.
 */
export class ApiError extends Error {
  readonly key: ErrorKey;
  readonly status: number;
  readonly extra: Record<string, unknown> | undefined;

  constructor(key: ErrorKey, message?: string, extra?: Record<string, unknown>) {
    super(message ?? ERRORS[key].message);
    this.name = 'ApiError';
    this.key = key;
    this.status = ERRORS[key].status;
    this.extra = extra;
  }

  /** The JSON body the client receives. */
  toBody(): Record<string, unknown> {
    return { ...(this.extra ?? {}), error: this.key, message: this.message };
  }
}

export function isApiError(err: unknown): err is ApiError {
  return err instanceof ApiError;
}
