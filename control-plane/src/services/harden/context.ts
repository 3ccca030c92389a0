import type { AppContext } from '../../app.ts';
import { SecretBox } from '../../auth/secret-box.ts';
import { DeployKeyStore } from './deploy-keys.ts';
import { agentOnline } from '../../hub/plugin.ts';
import { HardenService } from './service.ts';
import { verifyOverSsh } from './verify-ssh.ts';

declare module '../../app.ts' {
  interface AppContext {
    harden?: HardenService;
    /** The workspaces' deploy key pairs: harden installs the public half, deploy seals the private half into a repository secret. */
    deployKeys?: DeployKeyStore;
  }
}

/**
 * One store per control plane, so two first uses of a workspace never race to make two
 * keys. On PostgreSQL (several processes may share the database) the pairs are rows,
 * sealed with the SecretBox every process holds; one SQLite process keeps files.
 */
export function deployKeyStoreOf(ctx: AppContext): DeployKeyStore {
  return (ctx.deployKeys ??= new DeployKeyStore(ctx.config.dataDir, ctx.db.dialect === 'postgres' ? { db: ctx.db, box: SecretBox.forConfig(ctx.config) } : undefined));
}

/** The control plane's one HardenService (harden_vm and deploy share its runs), made on first use. */
export function hardenServiceOf(ctx: AppContext): HardenService {
  if (!ctx.harden) {
    if (!ctx.commandBus || !ctx.hub) throw new Error('the agent hub is not running');
    ctx.harden = new HardenService({
      db: ctx.db,
      bus: ctx.commandBus,
      isConnected: (id) => agentOnline(ctx, id),
      deployKeys: deployKeyStoreOf(ctx),
      verify: verifyOverSsh,
      now: ctx.now,
      logger: ctx.logger,
    });
  }
  return ctx.harden;
}
