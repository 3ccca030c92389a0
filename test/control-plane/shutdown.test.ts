/**
 * The control plane's close ends the connections it holds instead of waiting on them:
 * one that never carried a request, one idle after a response, one opened while it
 * closes; a request under way still gets its whole answer.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import t from 'tap';
import type { ApiPlugin } from '../../control-plane/src/app.ts';
import { ROUTES } from '../../control-plane/src/app.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

/** A raw connection: what the server sent, and a promise of its end. */
async function open(url: string): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let data = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (data += chunk));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => data, closed };
}

/** Waits until the server's answer to a request on `conn` is complete (Content-Length known). */
async function answered(conn: { socket: Socket; received: () => string }): Promise<string> {
  for (;;) {
    const text = conn.received();
    const head = text.indexOf('\r\n\r\n');
    const len = /content-length: (\d+)/i.exec(text)?.[1];
    if (head >= 0 && len !== undefined && text.length >= head + 4 + Number(len)) return text;
    await new Promise((resolve) => conn.socket.once('data', resolve));
  }
}

t.test('close ends a connection that never sent a request, without a 408', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const conn = await open(cp.url);
  await Promise.all([cp.close(), conn.closed]);
  // Left alone, Node answers such a connection after its headers timeout with "408 Request Timeout".
  t.equal(conn.received(), '', 'closed with nothing written to it');
});

t.test('close ends a keep-alive connection idle after its response', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const conn = await open(cp.url);
  conn.socket.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const first = await answered(conn);
  t.match(first, /^HTTP\/1\.1 200/, 'the request was answered');
  t.match(first, /keep-alive/i, 'and the connection kept alive');
  await Promise.all([cp.close(), conn.closed]);
  t.equal(conn.received(), first, 'closed with nothing more written');
});

t.test('a request under way when close starts gets its whole answer, then its connection ends', async (t) => {
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let arrived: () => void = () => undefined;
  const underWay = new Promise<void>((resolve) => (arrived = resolve));
  const slow: ApiPlugin = (app) => {
    app.get('/api/slow-test-route', async () => {
      arrived();
      await released;
      return { done: true };
    });
  };
  const cp = await startTestControlPlane({ routes: [...ROUTES, slow] });
  t.teardown(() => cp.close());
  const idle = await open(cp.url);
  const conn = await open(cp.url);
  conn.socket.write(`GET /api/slow-test-route HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${cp.adminKey}\r\n\r\n`);
  await underWay;
  const closing = cp.close();
  await idle.closed; // the idle one is ended at once, while the slow request still runs
  t.equal(conn.received(), '', 'the slow request is not answered yet');
  release();
  await Promise.all([closing, conn.closed]);
  t.match(conn.received(), /^HTTP\/1\.1 200[\s\S]*\{"done":true\}$/, 'its whole answer came before the connection ended');
});

t.test('a connection opened while the server closes is ended at once', async (t) => {
  // A shutdown step that takes a while (as the deploys' and the MCP sessions' do): the
  // listener is still open meanwhile, and a newcomer must not hold the close up.
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let entered: () => void = () => undefined;
  const inShutdownStep = new Promise<void>((resolve) => (entered = resolve));
  const step: ApiPlugin = (app) => {
    app.addHook('preClose', async () => {
      entered();
      await released;
    });
  };
  const cp = await startTestControlPlane({ routes: [...ROUTES, step] });
  t.teardown(() => cp.close());
  const closing = cp.close();
  await inShutdownStep;
  const late = await open(cp.url);
  await late.closed;
  t.equal(late.received(), '', 'accepted while the listener was still open, and ended with nothing written');
  release();
  await closing;
});
