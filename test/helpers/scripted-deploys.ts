/**
 * A deploys API whose one record the test moves forward by hand, for the tests of the
 * deploy faces (MCP tools, CLI) that do not need the real deploy service: POST answers
 * the record (or `postAnswer`), GET answers it, and GET with `wait_ms` and `after` equal
 * to the record's `updated_at` holds until the record changes or the wait ends, as the
 * real long-poll does. As a RestGateway (MCP) or over HTTP (`listen()`, for the CLI).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GatewayRequest, GatewayResponse, RestGateway } from '../../control-plane/src/mcp/gateway.ts';
import { readJsonBody, sendJson } from './http-json.ts';

export const STEPS = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];

export type View = Record<string, unknown> & { status: string; updated_at: string; steps: Array<Record<string, unknown>> };

/** A deploys API whose record the test moves forward; GET with wait_ms holds until it changes (or the wait ends). */
export class ScriptedDeploys implements RestGateway {
  readonly requests: GatewayRequest[] = [];
  view: View;
  postAnswer: GatewayResponse | null = null;
  #version = 0;
  #waiters = new Set<() => void>();

  constructor() {
    this.view = {
      deploy_id: 'dep_01jx5p0qr8s6n3t4u2v7w0y1z',
      status: 'running',
      pr_url: null,
      app_url: null,
      run_url: null,
      instance_id: null,
      sha: 'a'.repeat(40),
      current_step: null,
      error_key: null,
      error_message: null,
      steps: STEPS.map((name, seq) => ({ seq, name, state: 'pending', error_key: null, started_at: null, finished_at: null })),
      updated_at: this.#stamp(),
    };
  }

  #stamp(): string {
    this.#version += 1;
    return new Date(Date.UTC(2026, 0, 1, 0, 0, this.#version)).toISOString();
  }

  /** Moves the record on: a step's new state and/or top-level fields. */
  advance(step: { name: string; state: string; error_key?: string; error_message?: string } | null, patch: Record<string, unknown> = {}): void {
    const steps = this.view.steps.map((s) => {
      if (!step || s.name !== step.name) return s;
      const now = this.#stamp();
      return { ...s, ...step, started_at: s.started_at ?? now, finished_at: step.state === 'running' ? null : now };
    });
    this.view = { ...this.view, ...patch, steps, current_step: step?.name ?? this.view.current_step, updated_at: this.#stamp() };
    for (const w of [...this.#waiters]) w();
  }

  async request(req: GatewayRequest): Promise<GatewayResponse> {
    this.requests.push(req);
    if (req.method === 'POST') return this.postAnswer ?? { status: 202, headers: {}, body: this.view };
    const url = new URL(req.path, 'http://x');
    const after = url.searchParams.get('after');
    const waitMs = Number(url.searchParams.get('wait_ms') ?? 0);
    if (after !== null && after === this.view.updated_at && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, waitMs);
        function done(): void {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
        const waiters = this.#waiters;
        waiters.add(done);
      });
    }
    return { status: 200, headers: {}, body: this.view };
  }

  /** Serves the same API over HTTP on 127.0.0.1; `GET /api/deploys` lists the record. */
  async listen(teardown: { teardown(fn: () => unknown): void }): Promise<string> {
    const server = createServer((req, res) => {
      void (async () => {
        const body = req.method === 'POST' ? await readJsonBody(req) : undefined;
        const path = req.url ?? '/';
        if (req.method === 'GET' && new URL(path, 'http://x').pathname === '/api/deploys') {
          this.requests.push({ method: 'GET', path, authorization: req.headers.authorization, tool: 'cli' });
          return sendJson(res, 200, { items: [this.view] });
        }
        const answer = await this.request({ method: req.method === 'POST' ? 'POST' : 'GET', path, body, authorization: req.headers.authorization, tool: 'cli' });
        sendJson(res, answer.status, answer.body);
      })();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    teardown.teardown(() => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    });
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
}
