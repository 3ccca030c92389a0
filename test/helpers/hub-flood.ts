/**
 * Unauthenticated load on the agent hub, for tests: raw WebSocket upgrade requests to
 * /agent/v1/connect from a chosen loopback address (`localAddress`, e.g. 127.0.0.2, so
 * the flood and a real agent on 127.0.0.1 are different peers), never saying hello.
 * Upgrades that succeed are held open (the hub keeps a pending handshake for each)
 * until `close()`.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type { Socket } from 'node:net';

export interface FloodCounts {
  sent: number;
  /** HTTP status of each answer: 101 (upgraded, challenge pending), 429, 503, ... */
  byStatus: Map<number, number>;
  /** Requests that failed below HTTP (reset, refused). */
  errors: number;
}

export interface Flood {
  counts: FloodCounts;
  /** Resolves when every request was answered (or failed). */
  done: Promise<FloodCounts>;
  /** Resolves once `n` requests were answered. */
  answered(n: number): Promise<void>;
  /** Destroys the held sockets. */
  close(): void;
}

export function upgradeFlood(opts: { baseUrl: string; localAddress: string; total: number; concurrency?: number; path?: string }): Flood {
  const url = new URL(opts.path ?? '/agent/v1/connect', opts.baseUrl);
  const counts: FloodCounts = { sent: 0, byStatus: new Map(), errors: 0 };
  const held = new Set<Socket>();
  const waiters: { n: number; resolve: () => void }[] = [];
  let answered = 0;
  const note = (status: number | undefined) => {
    if (status === undefined) counts.errors++;
    else counts.byStatus.set(status, (counts.byStatus.get(status) ?? 0) + 1);
    answered++;
    for (const w of waiters.filter((x) => answered >= x.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  const one = () =>
    new Promise<void>((resolve) => {
      counts.sent++;
      const req = request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        localAddress: opts.localAddress,
        agent: false,
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': randomBytes(16).toString('base64'),
        },
      });
      req.on('upgrade', (_res, socket) => {
        held.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => held.delete(socket));
        note(101);
        resolve();
      });
      req.on('response', (res) => {
        res.resume();
        note(res.statusCode);
        resolve();
      });
      req.on('error', () => {
        note(undefined);
        resolve();
      });
      req.end();
    });
  const worker = async () => {
    while (counts.sent < opts.total) await one();
  };
  const done = Promise.all(Array.from({ length: opts.concurrency ?? 50 }, worker)).then(() => counts);
  return {
    counts,
    done,
    answered: (n) => (answered >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    close() {
      for (const s of held) s.destroy();
    },
  };
}
