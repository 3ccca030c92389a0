import { z } from 'zod';

/**
 * The operator hop of `vmkit shell` (`GET /api/instances/{id}/shell`, WebSocket):
 * binary messages are the terminal's bytes, as they are, both ways; text messages are
 * the JSON control messages below. The session is opened by the upgrade request's
 * query (`cols`, `rows`, `term`, `command`, `user`), so no byte waits for a first message.
 */
export const SHELL_PATH = /^\/api\/instances\/([^/]{1,128})\/shell$/;

export function shellPath(instance: string): string {
  return `/api/instances/${encodeURIComponent(instance)}/shell`;
}

const dim = z.number().int().min(1).max(1000);

/** Operator → control plane. */
export const OperatorControl = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('resize'), cols: dim, rows: dim }),
  z.strictObject({ type: z.literal('eof') }),
]);
export type OperatorControl = z.infer<typeof OperatorControl>;

/** Control plane → operator. */
export const ServerControl = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('opened'), session_id: z.string(), instance_id: z.string() }),
  z.strictObject({
    type: z.literal('exit'),
    code: z.number().int().nullable(),
    signal: z.string().nullable(),
    reason: z.string(),
    message: z.string().nullable(),
  }),
  z.strictObject({ type: z.literal('error'), error: z.string(), message: z.string() }),
]);
export type ServerControl = z.infer<typeof ServerControl>;

const TERM = /^[A-Za-z0-9._+-]{1,64}$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;

/** The upgrade request's query. */
export const ShellQuery = z.strictObject({
  cols: z.coerce.number().pipe(dim).default(80),
  rows: z.coerce.number().pipe(dim).default(24),
  term: z.string().regex(TERM, 'a TERM name (letters, digits, ._+-)').default('xterm-256color'),
  // eslint-disable-next-line no-control-regex -- a NUL cannot travel in an argument
  command: z.string().min(1).max(8192).regex(/^[^\u0000]*$/, 'no NUL characters').optional(),
  user: z.string().regex(USER, 'a login name').optional(),
});
export type ShellQuery = z.infer<typeof ShellQuery>;

export function isTermName(v: string): boolean {
  return TERM.test(v);
}
