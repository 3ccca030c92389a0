/**
 * TLS terminated in front of a plain control plane, as nginx does in production: each
 * connection is decrypted with the certificate of a test CA (test/helpers/test-ca.ts)
 * and its bytes passed to the control plane's port (WebSocket upgrades included). Give
 * the control plane `publicUrl: front.url` so it announces wss:// on this port.
 *
 *   const front = await startTlsFront(t, ca, () => cp.url);   // cp may start after it
 *   front.url   // https://127.0.0.1:<port>
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { createServer } from 'node:tls';
import type { TestCa } from './test-ca.ts';

export interface TlsFront {
  url: string;
  port: number;
}

/** `target` is read at each connection, so the control plane can start after the front (it needs the front's URL). */
export async function startTlsFront(t: { teardown(fn: () => unknown): void }, ca: TestCa, target: () => string): Promise<TlsFront> {
  const sockets = new Set<Socket>();
  const server = createServer({ cert: readFileSync(ca.certFile), key: readFileSync(ca.keyFile) }, (down) => {
    const up = connect(Number(new URL(target()).port), '127.0.0.1');
    sockets.add(down).add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    down.pipe(up).pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return { url: `https://127.0.0.1:${addr.port}`, port: addr.port };
}
