import type { CallToolResult, ToolAnnotations } from '@modelcontextprotocol/sdk/types.js';
import type { z } from 'zod';
import { errorBody, errorBodySchema } from '@vmkit/protocol';
import type { GatewayRequest, GatewayResponse } from './gateway.ts';

/** The contract's sentence for every authentication or authorization failure. */
export const AUTH_FAILED_TEXT =
  'Authentication failed — your vmk_ API key is missing, invalid, expired, or lacks the scope this tool requires.';

/** What a tool may do while it runs: call REST as its caller, report progress, stop when asked. */
export interface ToolContext {
  call(req: Omit<GatewayRequest, 'authorization' | 'tool' | 'clientAddress' | 'signal'>): Promise<GatewayResponse>;
  progress(progress: number, message: string, total?: number): Promise<void>;
  signal: AbortSignal;
  /** How long a tool may block before answering with an id to poll. */
  maxWaitMs: number;
}

export interface ToolSpec<I extends z.ZodObject = z.ZodObject, O extends z.ZodObject = z.ZodObject> {
  name: string;
  title: string;
  description: string;
  inputSchema: I;
  outputSchema: O;
  annotations: ToolAnnotations;
  run(args: z.infer<I>, ctx: ToolContext): Promise<CallToolResult>;
}

/** A tool with its argument type erased, so tools of different shapes share one list. */
export type AnyToolSpec = Omit<ToolSpec, 'run'> & { run(args: unknown, ctx: ToolContext): Promise<CallToolResult> };

/** Checks a tool against its own schemas at compile time, then erases its types. */
export function defineTool<I extends z.ZodObject, O extends z.ZodObject>(spec: ToolSpec<I, O>): AnyToolSpec {
  return spec;
}

/** A REST answer that is not a success, carried up to the MCP result. */
export class RestFailure extends Error {
  readonly response: GatewayResponse;
  constructor(response: GatewayResponse) {
    super(`REST call failed with ${response.status}`);
    this.response = response;
  }
}

function isAuthFailure(res: GatewayResponse): boolean {
  if (res.status === 401 || res.status === 403) return true;
  const body = res.body as { error?: unknown } | null;
  return body?.error === 'unauthorized' || body?.error === 'forbidden';
}

/** The backend's JSON error body as text, exactly as the REST API sent it. */
function errorText(res: GatewayResponse): string {
  const body = errorBodySchema.safeParse(res.body);
  if (body.success) return JSON.stringify({ error: body.data.error, message: body.data.message });
  return JSON.stringify(errorBody('internal', `The control plane answered ${res.status}.`));
}

/** Maps a failed REST answer to the contract's tool error. */
export function errorResult(res: GatewayResponse): CallToolResult {
  return { isError: true, content: [{ type: 'text', text: isAuthFailure(res) ? AUTH_FAILED_TEXT : errorText(res) }] };
}

/** A successful tool answer: structured content plus the same JSON as text. */
export function okResult(structured: Record<string, unknown>): CallToolResult {
  return { structuredContent: structured, content: [{ type: 'text', text: JSON.stringify(structured) }] };
}

/** Throws RestFailure unless the REST answer is 2xx; returns the body. */
export function expectOk(res: GatewayResponse): Record<string, unknown> {
  if (res.status < 200 || res.status >= 300) throw new RestFailure(res);
  return (res.body ?? {}) as Record<string, unknown>;
}

/** Path segment from a tool argument, so an id can never change the route. */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

/** The promise's value, or undefined as soon as the signal aborts. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
