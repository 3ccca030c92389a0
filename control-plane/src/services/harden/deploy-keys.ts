import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isId } from '@vmkit/protocol';
import { generateEd25519KeyPair } from '../../shell/ssh-key.ts';

export interface DeployKey {
  /** One OpenSSH public key line, installed in ~kamal/.ssh/authorized_keys. */
  publicKey: string;
  /** OpenSSH private key; leaves the control plane only into the deploy workflow's secret. */
  privateKey: string;
}

/**
 * Each workspace's deploy key pair (Ed25519), made on first use. Files live in a
 * 0700 folder of the data directory, the private half 0600, written atomically.
 */
export class DeployKeyStore {
  readonly #dir: string;
  /** Promises, so parallel first uses of a workspace share one key instead of racing to create two. */
  readonly #cache = new Map<string, Promise<DeployKey>>();

  constructor(dataDir: string) {
    this.#dir = join(dataDir, 'deploy-keys');
  }

  get(workspaceId: string): Promise<DeployKey> {
    if (!isId('workspace', workspaceId)) return Promise.reject(new TypeError('not a workspace id'));
    let key = this.#cache.get(workspaceId);
    if (!key) {
      key = this.#load(workspaceId);
      this.#cache.set(workspaceId, key);
      // A failure is not cached: the next call tries again.
      key.catch(() => this.#cache.delete(workspaceId));
    }
    return key;
  }

  async #load(workspaceId: string): Promise<DeployKey> {
    const base = join(this.#dir, workspaceId);
    try {
      return { privateKey: await readFile(base, 'utf8'), publicKey: (await readFile(`${base}.pub`, 'utf8')).trim() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return this.#create(workspaceId, base);
    }
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
