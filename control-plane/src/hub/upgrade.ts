import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

const routesByServer = new WeakMap<Server, Map<string, UpgradeHandler>>();
/** Routes with a path parameter (`/api/instances/{id}/shell`), tried after the exact paths. */
const patternsByServer = new WeakMap<Server, [RegExp, UpgradeHandler][]>();

/**
 * One `upgrade` listener per HTTP server, dispatching by path, so the agent hub and
 * other WebSocket endpoints (the ops shell) share the server and any other path gets a
 * plain 404 instead of a socket left hanging.
 */
export function registerUpgradeRoute(server: Server, path: string | RegExp, handler: UpgradeHandler): void {
  let routes = routesByServer.get(server);
  if (!routes) {
    const table = new Map<string, UpgradeHandler>();
    const patterns: [RegExp, UpgradeHandler][] = [];
    routes = table;
    routesByServer.set(server, table);
    patternsByServer.set(server, patterns);
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      const route = table.get(path) ?? patterns.find(([re]) => re.test(path))?.[1];
      if (route) {
        route(req, socket, head);
        return;
      }
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
  }
  if (path instanceof RegExp) {
    patternsByServer.get(server)?.push([path, handler]);
    return;
  }
  if (routes.has(path)) throw new Error(`an upgrade route for ${path} is already registered`);
  routes.set(path, handler);
}
