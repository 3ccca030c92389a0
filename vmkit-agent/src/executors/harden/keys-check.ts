/**
 * The check between the account steps and any sshd change: kamal exists with the
 * home and shell sshd will use, and ~kamal/.ssh/authorized_keys holds every deploy
 * key, owned by kamal and private, as sshd's StrictModes wants. Only when this holds
 * may root and passwords be turned off.
 */
import { posix } from 'node:path';
import { parsePasswd } from './accounts.ts';
import { keyId, parseKeyLine } from './authorized-keys.ts';
import { readText, statOf } from './snapshot.ts';
import { HARDEN_HOME, HARDEN_SHELL, HARDEN_USER, underRoot } from './types.ts';
import type { HardenPaths } from './types.ts';

/** What is wrong, one sentence each; empty when kamal can log in with the keys. */
export async function checkKamalKeys(paths: HardenPaths, deployKeys: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  const kamal = parsePasswd(await readText(paths.passwd)).find((u) => u.name === HARDEN_USER);
  if (!kamal) return [`${HARDEN_USER} is not in ${paths.passwd}`];
  if (kamal.home !== HARDEN_HOME) problems.push(`${HARDEN_USER}'s home is ${kamal.home}, not ${HARDEN_HOME}`);
  if (kamal.shell !== HARDEN_SHELL) problems.push(`${HARDEN_USER}'s shell is ${kamal.shell}, not ${HARDEN_SHELL}`);
  const home = underRoot(paths.root, HARDEN_HOME);
  const sshDir = posix.join(home, '.ssh');
  const keysPath = posix.join(sshDir, 'authorized_keys');
  const homeStat = await statOf(home);
  if (homeStat?.kind !== 'dir') problems.push(`${home} is ${homeStat ? `a ${homeStat.kind}` : 'missing'}`);
  const dir = await statOf(sshDir);
  if (dir?.kind !== 'dir') problems.push(`${sshDir} is ${dir ? `a ${dir.kind}` : 'missing'}`);
  else if (dir.uid !== kamal.uid || (dir.mode & 0o077) !== 0) problems.push(`${sshDir} is not private to ${HARDEN_USER} (owner ${dir.uid}, mode 0${dir.mode.toString(8)})`);
  const file = await statOf(keysPath);
  if (file?.kind !== 'file') return [...problems, `${keysPath} is ${file ? `a ${file.kind}` : 'missing'}`];
  if (file.uid !== kamal.uid || (file.mode & 0o077) !== 0) problems.push(`${keysPath} is not private to ${HARDEN_USER} (owner ${file.uid}, mode 0${file.mode.toString(8)})`);
  const present = new Set<string>();
  for (const line of ((await readText(keysPath)) ?? '').split('\n')) {
    const k = parseKeyLine(line);
    if (k) present.add(keyId(k));
  }
  const missing = deployKeys.map((l) => parseKeyLine(l)).filter((k) => k !== null && !present.has(keyId(k)));
  if (missing.length > 0) problems.push(`${keysPath} lacks ${missing.length} of the deploy keys`);
  if (present.size === 0) problems.push(`${keysPath} holds no valid key`);
  return problems;
}
