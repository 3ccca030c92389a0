import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { encodePublicKey, newId } from '@vmkit/protocol';
import { AgentHub } from '../../control-plane/src/hub/agent-hub.ts';
import type { HubOptions } from '../../control-plane/src/hub/agent-hub.ts';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import { MemoryHubStore } from '../../control-plane/src/hub/memory-store.ts';
import { FileKeyRing } from '../../control-plane/src/hub/signing-keys.ts';

export interface HubFixture {
  url: string;
  hub: AgentHub;
  bus: InProcessCommandBus;
  store: MemoryHubStore;
  ring: FileKeyRing;
  dataDir: string;
  addAgent(): { agentId: string; key: KeyObject };
  close(): Promise<void>;
}

/** A hub on a plain HTTP server over the in-memory store: hub behaviour without the app. */
export async function startHub(opts: Partial<HubOptions> = {}): Promise<HubFixture> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-hub-'));
  const store = new MemoryHubStore();
  const ring = FileKeyRing.open(dataDir);
  const hub = new AgentHub({ store, keys: ring, ...opts });
  const bus = new InProcessCommandBus({ store, link: hub, keys: ring, sweepIntervalMs: 200 });
  hub.addListener(bus);
  await hub.start();
  const server = createServer((_req, res) => res.writeHead(404).end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/agent/v1/connect`,
    hub,
    bus,
    store,
    ring,
    dataDir,
    addAgent() {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const agentId = newId('agent');
      store.addAgent({
        id: agentId,
        instanceId: newId('instance'),
        workspaceId: newId('workspace'),
        publicKey: encodePublicKey(publicKey),
        pinnedKeyIds: ring.published().map((k) => k.key_id),
      });
      return { agentId, key: privateKey };
    },
    async close() {
      await bus.close();
      await hub.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function until(cond: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
