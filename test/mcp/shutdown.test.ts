/**
 * A control plane shuts down while MCP clients hold sessions with their standing GET
 * stream open (the SDK's client opens one after initialize, for server-initiated
 * messages): the sessions are ended first, so the server's close does not wait on those
 * streams forever. The client sees its transport close.
 */
import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { connectMcp } from '../helpers/mcp-client.ts';

t.test('shutdown ends open MCP sessions instead of waiting on their streams', async (t) => {
  const cp = await startTestControlPlane();
  let closed = false;
  t.teardown(() => (closed ? undefined : cp.close()));
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  const tools = await client.listTools();
  t.ok(tools.tools.some((tool) => tool.name === 'scan_repo'), 'the session works');
  // Wait until the client's standing GET stream is open on the server.
  const sessionId = (client.transport as { sessionId?: string } | undefined)?.sessionId;
  t.ok(sessionId, 'the client has a session');
  for (;;) {
    const n = await new Promise<number>((resolve) => cp.app.server.getConnections((_e, count) => resolve(count)));
    if (n >= 2) break; // the POST connection (kept alive) and the GET stream
    await new Promise((r) => setTimeout(r, 20));
  }
  const transportClosed = new Promise<void>((resolve) => {
    client.onclose = () => resolve();
  });
  await cp.close();
  closed = true;
  t.pass('the control plane closed with an MCP stream open');
  await client.close();
  await transportClosed;
});
