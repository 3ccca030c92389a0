import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ApiPlugin, AppContext } from '../app.ts';
import { openHubStore } from '../db/hub-store.ts';
import { AgentHub } from './agent-hub.ts';
import { ClusterNode } from './cluster.ts';
import { InProcessCommandBus } from './command-bus.ts';
import type { CommandBus, CommandRouter } from './command-bus.ts';
import { agentHubConfig } from './config.ts';
import type { AgentHubConfig } from './config.ts';
import { KeyRotation } from './key-rotation.ts';
import { clientAddressResolver } from './pre-auth.ts';
import { HubShellOpener } from './shell-opener.ts';
import { ClusterShellOpener } from './cluster-shell-opener.ts';
import { ShellRelayServer } from './shell-relay-server.ts';
import { SHELL_RELAY_KEY_PURPOSE, SHELL_RELAY_PATH } from './shell-relay-wire.ts';
import { registerUpgradeRoute } from './upgrade.ts';
import { findAgentHolder } from '../db/control-planes.ts';
import { listeningUrl } from '../server-url.ts';
import { FileKeyRing } from './signing-keys.ts';
import type { RotatableKeyRing } from './signing-keys.ts';
import { DbKeyRing } from './signing-keys-db.ts';
import { SecretBox } from '../auth/secret-box.ts';
import { MeasuredCommandBus } from '../metrics/command-bus.ts';
import { DatabaseHealthProbe } from '../db/health.ts';

declare module '../app.ts' {
  interface AppContext {
    /** The agent WebSocket hub at /agent/v1/connect (set by agentHubPlugin). */
    hub?: AgentHub;
    /** Send typed, signed commands to agents and await their results (set by agentHubPlugin). */
    commandBus?: CommandBus;
    keyRing?: RotatableKeyRing;
    keyRotation?: KeyRotation;
    agentHubConfig?: AgentHubConfig;
    /** Several processes on PostgreSQL: agents other processes hold (set by agentHubPlugin). */
    agentRouter?: CommandRouter;
    /** Several processes on PostgreSQL: this process's node (set by agentHubPlugin). */
    clusterNode?: ClusterNode;
  }
}

/**
 * Whether a command sent now reaches the agent: connected to this process, or (several
 * processes on PostgreSQL) to another live one. What services check before they send.
 */
export async function agentOnline(ctx: AppContext, agentId: string): Promise<boolean> {
  if (ctx.hub?.isConnected(agentId) === true) return true;
  return (await ctx.agentRouter?.heldElsewhere(agentId)) === true;
}

/** ctx.commandBus, or a clear failure when the hub plugin is not registered. */
export function commandBusOf(ctx: AppContext): CommandBus {
  if (!ctx.commandBus) throw new Error('the agent hub is not running (agentHubPlugin not registered)');
  return ctx.commandBus;
}

/**
 * Creates the hub, the command bus and the key ring, serves the hub on the app's HTTP
 * server, and ties their lifetime to the app's: started when the app is ready, closed
 * (every agent marked disconnected) before the server closes. Register it before any
 * route that uses ctx.hub or ctx.commandBus.
 */
export const agentHubPlugin: ApiPlugin = async (app, { ctx }) => {
  const cfg = agentHubConfig(ctx.config);
  const ring = await openKeyRing(ctx);
  ctx.signingKey = ring.active();
  // PostgreSQL: one node of possibly several; connections and commands are recorded as this node's,
  // and commands for agents another node holds go there over LISTEN/NOTIFY.
  const cluster =
    ctx.db.dialect === 'postgres'
      ? new ClusterNode({
          db: ctx.db,
          nodeId: ctx.nodeId,
          // This process's own address, not the public URL (a load balancer's): other processes forward to it.
          url: () => ctx.internalUrl ?? ctx.config.internalUrl ?? listeningUrl(app.server, ctx.config.host) ?? ctx.publicUrl,
          heartbeatMs: cfg.nodeHeartbeatMs,
          staleAfterMs: cfg.nodeStaleAfterMs,
          logger: ctx.logger,
        })
      : undefined;
  const store = openHubStore(ctx.db, cluster ? ctx.nodeId : undefined);
  const hub = new AgentHub({
    store,
    keys: ring,
    logger: ctx.logger,
    heartbeatIntervalMs: cfg.heartbeatIntervalMs,
    deadAfterMs: cfg.deadAfterMs,
    handshakeTimeoutMs: cfg.handshakeTimeoutMs,
    handshakesPerSecond: cfg.handshakesPerSecond,
    handshakeQueueMs: cfg.handshakeQueueMs,
    preAuthPerAddressPerSecond: cfg.preAuthPerAddressPerSecond,
    maxPendingHandshakes: cfg.maxPendingHandshakes,
    clientAddress: clientAddressResolver(ctx.config.trustProxy),
    lastSeenFlushMs: cfg.lastSeenFlushMs,
  });
  const bus = new InProcessCommandBus({ store, link: hub, keys: ring, logger: ctx.logger, ...(cluster && { router: cluster.router }) });
  if (cluster && ctx.databaseProbe instanceof DatabaseHealthProbe) ctx.databaseProbe.attachNotify(() => cluster.notifyStats());
  // Everything that sends goes through the measured bus; the hub talks to the bus itself.
  const sender = ctx.metrics ? new MeasuredCommandBus(bus, ctx.metrics) : bus;
  const rotation = new KeyRotation({
    ring,
    bus: sender,
    hub,
    store,
    logger: ctx.logger,
    ...(cluster && { heldElsewhere: () => cluster.router.heldElsewhereIds() }),
  });
  hub.addListener(bus);
  hub.addListener(rotation);
  const localShells = new HubShellOpener({ hub, bus: sender });
  // Several processes: a shell for an agent another live process holds is relayed there (signed), and opened here for others.
  const relayKey = cluster ? SecretBox.forConfig(ctx.config).subkey(SHELL_RELAY_KEY_PURPOSE) : undefined;
  const shellOpener = relayKey
    ? new ClusterShellOpener({
        local: localShells,
        holdsLocally: (agentId) => hub.isConnected(agentId),
        holderOf: async (agentId) => {
          const holder = await findAgentHolder(ctx.db, agentId, Date.now() - cfg.nodeStaleAfterMs);
          return holder?.nodeId === ctx.nodeId ? undefined : holder;
        },
        nodeId: ctx.nodeId,
        key: relayKey,
        logger: ctx.logger,
        metrics: ctx.metrics,
      })
    : localShells;
  const shellRelay = relayKey
    ? new ShellRelayServer({ nodeId: ctx.nodeId, key: relayKey, local: localShells, logger: ctx.logger, metrics: ctx.metrics })
    : undefined;
  Object.assign(ctx, { hub, commandBus: sender, keyRing: ring, keyRotation: rotation, agentHubConfig: cfg, shellOpener });
  if (cluster) Object.assign(ctx, { agentRouter: cluster.router, clusterNode: cluster });
  hub.attach(app.server);
  if (shellRelay) registerUpgradeRoute(app.server, SHELL_RELAY_PATH, (req, socket, head) => shellRelay.handleUpgrade(req, socket, head));
  app.addHook('onReady', async () => {
    await hub.start();
    await cluster?.start(hub, bus);
  });
  // Registered before the server listened: the real port (port 0) is written at once, not at the next heartbeat.
  if (cluster) app.server.once('listening', () => void cluster.announce());
  app.addHook('preClose', async () => {
    // Every part is closed even when one fails (a database gone away): a timer left behind
    // would keep the process alive after a SIGTERM. The first failure is thrown at the end.
    const failures: unknown[] = [];
    const step = async (fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        failures.push(err);
      }
    };
    if (ring instanceof DbKeyRing) ring.close();
    await step(() => bus.close());
    if (shellOpener instanceof ClusterShellOpener) shellOpener.close();
    await step(() => hub.close());
    shellRelay?.close();
    await step(() => cluster?.close());
    if (failures.length > 0) throw failures[0];
  });
};

/**
 * One process on SQLite keeps its signing keys in `<dataDir>/signing-keys/`. On
 * PostgreSQL, where several processes serve one fleet, the ring is in the database
 * (sealed with the shared secret-box key) so that every process signs with the keys
 * agents pinned; a process that had a file ring brings its active key along when the
 * database has none yet.
 */
async function openKeyRing(ctx: AppContext): Promise<RotatableKeyRing> {
  const legacyPem = join(ctx.config.dataDir, 'signing-key.pem');
  if (ctx.db.dialect === 'sqlite') return FileKeyRing.open(ctx.config.dataDir, legacyPem);
  const hadFileRing = existsSync(join(ctx.config.dataDir, 'signing-keys', 'keys.json')) || existsSync(legacyPem);
  const adopt = hadFileRing ? FileKeyRing.open(ctx.config.dataDir, legacyPem).active() : undefined;
  return DbKeyRing.open(ctx.db, SecretBox.forConfig(ctx.config), {
    ...(adopt !== undefined && { adopt }),
    onRefreshError: (err) => ctx.logger.warn({ err }, 'signing keys: re-reading the ring failed; signing with the keys already read'),
  });
}
