import { chmod, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { privateKeyFromPem } from '@vmkit/protocol';
import type { KeyObject } from 'node:crypto';
import { ConfigError } from './config.ts';
import { ensurePrivateDir, fsyncDir } from './durable.ts';

/**
 * Layout of the state directory (0700):
 *   agent.key        the agent's Ed25519 private key, PKCS#8 PEM, 0600
 *   agent.pub        its public half, base64url (what the control plane registered)
 *   replay.json      accepted command ids/nonces until they expire
 *   journal/<id>.json one record per accepted command: running, then its result
 *   harden/           the state before a harden run's first change, while it runs
 *                     (executors/harden/journal.ts)
 *   status.json      what `vmkit-agent status` prints, rewritten by the daemon
 *   daemon.pid       pid of the running daemon (one per state directory)
 *   update.json      an agent.update in flight across a restart (update/marker.ts)
 */
export function statePaths(stateDir: string) {
  return {
    dir: stateDir,
    privateKey: join(stateDir, 'agent.key'),
    publicKey: join(stateDir, 'agent.pub'),
    replay: join(stateDir, 'replay.json'),
    journal: join(stateDir, 'journal'),
    harden: join(stateDir, 'harden'),
    status: join(stateDir, 'status.json'),
    lock: join(stateDir, 'daemon.pid'),
    update: join(stateDir, 'update.json'),
  };
}
export type StatePaths = ReturnType<typeof statePaths>;

export async function prepareStateDir(stateDir: string): Promise<StatePaths> {
  const p = statePaths(stateDir);
  await ensurePrivateDir(p.dir);
  // systemd's StateDirectory= or an older install may have made it wider.
  await chmod(p.dir, 0o700);
  await ensurePrivateDir(p.journal);
  await ensurePrivateDir(p.harden);
  // The directories' own entries must survive a power cut before anything is journaled in them.
  await fsyncDir(p.dir);
  return p;
}

/** Loads the private key, refusing one that others can read (like ssh does). */
export async function loadAgentKey(paths: StatePaths): Promise<KeyObject> {
  let info;
  try {
    info = await stat(paths.privateKey);
  } catch {
    throw new ConfigError(`agent key ${paths.privateKey} does not exist (run \`vmkit-agent enroll\`, or pass the right --state-dir)`);
  }
  if ((info.mode & 0o077) !== 0) {
    throw new ConfigError(`agent key ${paths.privateKey} is accessible by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it`);
  }
  try {
    return privateKeyFromPem(await readFile(paths.privateKey, 'utf8'));
  } catch (err) {
    throw new ConfigError(`agent key ${paths.privateKey} is not an Ed25519 private key: ${(err as Error).message}`);
  }
}
