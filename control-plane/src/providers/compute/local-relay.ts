/**
 * A plain TCP relay, so a control plane on the host's loopback is reachable from a
 * sandbox at the same loopback URL: inside the sandbox the supervisor relays
 * 127.0.0.1:P to the host end of the link, and on the host a relay process forwards
 * <host end>:P to 127.0.0.1:P (skipped when the control plane already listens there).
 * Run directly: `node --import tsx local-relay.ts LISTEN_HOST PORT TARGET_HOST TARGET_PORT`.
 */
import { connect, createServer } from 'node:net';
import type { Server } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface Forward {
  listen_host: string;
  listen_port: number;
  target_host: string;
  target_port: number;
}

export const RELAY_LISTENING = 'vmkit-relay: listening';
export const RELAY_NOT_NEEDED = 'vmkit-relay: address in use, not needed';

/** Resolves with the server once it listens, or undefined when the address is taken already. */
export function startRelay(f: Forward): Promise<Server | undefined> {
  const server = createServer((inbound) => {
    const outbound = connect({ host: f.target_host, port: f.target_port });
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const close = (): void => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', close);
    outbound.on('error', close);
    inbound.on('close', close);
    outbound.on('close', close);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err)));
    server.listen(f.listen_port, f.listen_host, () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [listenHost, listenPort, targetHost, targetPort] = process.argv.slice(2);
  if (listenHost === undefined || targetHost === undefined || !/^\d+$/.test(listenPort ?? '') || !/^\d+$/.test(targetPort ?? '')) {
    process.stderr.write('usage: local-relay.ts LISTEN_HOST PORT TARGET_HOST TARGET_PORT\n');
    process.exit(2);
  }
  startRelay({ listen_host: listenHost, listen_port: Number(listenPort), target_host: targetHost, target_port: Number(targetPort) }).then(
    (server) => {
      process.stdout.write(`${server ? RELAY_LISTENING : RELAY_NOT_NEEDED}\n`);
      if (!server) process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`vmkit-relay: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
