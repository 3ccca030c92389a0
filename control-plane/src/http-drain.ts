import type { Socket } from 'node:net';
import type { App } from './app.ts';

/**
 * Shutdown that does not wait on clients who send nothing. The HTTP server's close
 * waits until every connection has ended; Node closes the idle keep-alive ones, but a
 * connection that was opened and never carried a request (a client's pre-opened socket,
 * or one a client reconnects while the server shuts down) is not idle to Node, and held
 * the close until the headers timeout (60 s) answered it with 408. Once the app starts
 * closing:
 * - connections with no request under way are ended at once;
 * - a connection whose request is under way is ended when its response is done (the
 *   response itself completes);
 * - a connection arriving while the app closes is ended at once.
 * Upgraded connections (agents, shell doors) are left to the plugins that own them.
 */
export function endConnectionsOnClose(app: App): void {
  const server = app.server;
  const busy = new Map<Socket, number>();
  const idle = new Set<Socket>();
  let closing = false;

  const end = (socket: Socket) => {
    idle.delete(socket);
    // Flushes what the last response wrote, then closes.
    socket.end(() => socket.destroy());
  };

  server.on('connection', (socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    idle.add(socket);
    socket.once('close', () => {
      idle.delete(socket);
      busy.delete(socket);
    });
  });
  server.on('request', (request, response) => {
    const socket = request.socket;
    idle.delete(socket);
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    response.once('close', () => {
      const left = (busy.get(socket) ?? 1) - 1;
      if (left > 0) {
        busy.set(socket, left);
        return;
      }
      busy.delete(socket);
      if (socket.destroyed) return;
      if (closing) end(socket);
      else idle.add(socket);
    });
  });
  server.on('upgrade', (request: { socket: Socket }) => {
    idle.delete(request.socket);
  });
  app.addHook('preClose', (done) => {
    closing = true;
    for (const socket of [...idle]) end(socket);
    done();
  });
}
