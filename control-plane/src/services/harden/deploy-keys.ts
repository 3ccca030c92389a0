import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { isId } from '@vmkit/protocol';
import type { SecretBox } from '../../auth/secret-box.ts';
import type { Db } from '../../db/index.ts';
import { generateEd25519KeyPair } from '../../shell/ssh-key.ts';

export interface DeployKey {
  /** One OpenSSH public key line, installed in ~kamal/.ssh/authorized_keys. */
  publicKey: string;
  /** OpenSSH private key; leaves the control plane only into the deploy workflow's secret. */
  privateKey: string;
}

/** Where several control-plane processes keep one pair per workspace: a database they share, and the SecretBox they all hold. */
export interface SharedDeployKeys {
  db: Db;
  box: SecretBox;
}

/** The SecretBox context a deploy key's private half is sealed under: a sealed key moved to another workspace's row does not open. */
export function deployKeyContext(workspaceId: string): string {
  return `deploy-key/${workspaceId}`;
}

/**
 * Each workspace's deploy key pair (Ed25519), made on first use. One process (SQLite):
 * files in a 0700 folder of the data directory, the private half 0600, written
 * atomically. Several processes on one database (`shared`): a row of `deploy_keys`,
 * the private half sealed with the SecretBox, so a VM hardened through one process is
 * already hardened for the others and a deploy through any process logs in with the key
 * the VM trusts. The first process to need a workspace's pair inserts it (its data
 * dir's file pair when it has one, which its VMs already trust; else a new one); the
 * others read that row.
 */
export class DeployKeyStore {
  readonly #dir: string;
  readonly #shared: SharedDeployKeys | undefined;
  /** Promises, so parallel first uses of a workspace share one key instead of racing to create two. */
  readonly #cache = new Map<string, Promise<DeployKey>>();

  constructor(dataDir: string, shared?: SharedDeployKeys) {
    this.#dir = join(dataDir, 'deploy-keys');
    this.#shared = shared;
  }

  get(workspaceId: string): Promise<DeployKey> {
    if (!isId('workspace', workspaceId)) return Promise.reject(new TypeError('not a workspace id'));
    let key = this.#cache.get(workspaceId);
    if (!key) {
      key = this.#shared ? this.#loadShared(this.#shared, workspaceId) : this.#load(workspaceId);
      this.#cache.set(workspaceId, key);
      // A failure is not cached: the next call tries again.
      key.catch(() => this.#cache.delete(workspaceId));
    }
    return key;
  }

  async #load(workspaceId: string): Promise<DeployKey> {
    const base = join(this.#dir, workspaceId);
    return (await this.#readFiles(base)) ?? this.#create(workspaceId, base);
  }

  /** The pair in the data dir's files, or undefined when there is none. */
  async #readFiles(base: string): Promise<DeployKey | undefined> {
    try {
      return { privateKey: await readFile(base, 'utf8'), publicKey: (await readFile(`${base}.pub`, 'utf8')).trim() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return undefined;
    }
  }

  async #loadShared(shared: SharedDeployKeys, workspaceId: string): Promise<DeployKey> {
    const found = await readRow(shared, workspaceId);
    if (found) return found;
    const pair = (await this.#readFiles(join(this.#dir, workspaceId))) ?? toDeployKey(generateEd25519KeyPair(`vmkit-deploy-${workspaceId}`));
    const { deployKeys } = shared.db.t;
    // Of processes inserting at once, one row wins; every one then uses the row.
    await shared.db.orm
      .insert(deployKeys)
      .values({ workspaceId, publicKey: pair.publicKey, sealedPrivateKey: shared.box.seal(pair.privateKey, deployKeyContext(workspaceId)), createdAt: Date.now() })
      .onConflictDoNothing({ target: deployKeys.workspaceId });
    const row = await readRow(shared, workspaceId);
    if (!row) throw new Error(`the deploy key of ${workspaceId} was not stored`);
    return row;
  }

  async #create(workspaceId: string, base: string): Promise<DeployKey> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await chmod(this.#dir, 0o700);
    const pair = generateEd25519KeyPair(`vmkit-deploy-${workspaceId}`);
    // Temporary names of this attempt's own: a process killed here leaves strays, not a block.
    const tmp = `${base}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(`${tmp}.tmp`, pair.private, { mode: 0o600, flag: 'wx' });
    await writeFile(`${tmp}.pub.tmp`, `${pair.public}\n`, { mode: 0o644, flag: 'wx' });
    await rename(`${tmp}.pub.tmp`, `${base}.pub`);
    await rename(`${tmp}.tmp`, base);
    return { privateKey: pair.private, publicKey: pair.public };
  }
}

function toDeployKey(pair: { public: string; private: string }): DeployKey {
  return { publicKey: pair.public, privateKey: pair.private };
}

async function readRow(shared: SharedDeployKeys, workspaceId: string): Promise<DeployKey | undefined> {
  const { deployKeys } = shared.db.t;
  const [row] = await shared.db.orm
    .select({ publicKey: deployKeys.publicKey, sealedPrivateKey: deployKeys.sealedPrivateKey })
    .from(deployKeys)
    .where(eq(deployKeys.workspaceId, workspaceId));
  if (!row) return undefined;
  return { publicKey: row.publicKey, privateKey: shared.box.open(row.sealedPrivateKey, deployKeyContext(workspaceId)) };
}
