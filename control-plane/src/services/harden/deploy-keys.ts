import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { isId } from '@vmkit/protocol';

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
  readonly #cache = new Map<string, DeployKey>();

  constructor(dataDir: string) {
    this.#dir = join(dataDir, 'deploy-keys');
  }

  async get(workspaceId: string): Promise<DeployKey> {
    if (!isId('workspace', workspaceId)) throw new TypeError('not a workspace id');
    const cached = this.#cache.get(workspaceId);
    if (cached) return cached;
    const base = join(this.#dir, workspaceId);
    let key: DeployKey;
    try {
      key = { privateKey: await readFile(base, 'utf8'), publicKey: (await readFile(`${base}.pub`, 'utf8')).trim() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      key = await this.#create(workspaceId, base);
    }
    this.#cache.set(workspaceId, key);
    return key;
  }

  async #create(workspaceId: string, base: string): Promise<DeployKey> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await chmod(this.#dir, 0o700);
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: `vmkit-deploy-${workspaceId}` });
    await writeFile(`${base}.tmp`, pair.private, { mode: 0o600, flag: 'wx' });
    await writeFile(`${base}.pub.tmp`, `${pair.public}\n`, { mode: 0o644, flag: 'wx' });
    await rename(`${base}.pub.tmp`, `${base}.pub`);
    await rename(`${base}.tmp`, base);
    return { privateKey: pair.private, publicKey: pair.public };
  }
}
