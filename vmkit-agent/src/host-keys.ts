import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_SSH_HOST_KEYS, MAX_SSH_HOST_KEY_LENGTH, sshHostKeyProblem } from '@vmkit/protocol';

/** Where sshd keeps its host keys on Debian and Ubuntu. */
export const DEFAULT_SSH_HOST_KEY_DIR = '/etc/ssh';

const PUB = /^ssh_host_[a-z0-9]+_key\.pub$/;

export interface HostKeys {
  /** OpenSSH public key lines, in file-name order. */
  keys: string[];
  /** Files that were not a host public key, with why: reported, never sent. */
  skipped: { file: string; reason: string }[];
}

/**
 * The machine's SSH host public keys, which the control plane records so a deploy can
 * pin them in known_hosts instead of trusting the first key it sees. A missing
 * directory means no sshd here: no keys, not an error.
 */
export async function readSshHostKeys(dir = DEFAULT_SSH_HOST_KEY_DIR): Promise<HostKeys> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => PUB.test(n)).sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { keys: [], skipped: [] };
    throw err;
  }
  const out: HostKeys = { keys: [], skipped: [] };
  for (const name of names) {
    const file = join(dir, name);
    let line: string;
    try {
      line = (await readHead(file, MAX_SSH_HOST_KEY_LENGTH + 2)).split('\n')[0]?.trim() ?? '';
    } catch (err) {
      out.skipped.push({ file, reason: (err as Error).message });
      continue;
    }
    const problem = sshHostKeyProblem(line);
    if (problem !== null) out.skipped.push({ file, reason: problem });
    else if (out.keys.length >= MAX_SSH_HOST_KEYS) out.skipped.push({ file, reason: `more than ${MAX_SSH_HOST_KEYS} host keys` });
    else if (!out.keys.includes(line)) out.keys.push(line);
  }
  return out;
}

/** At most `max` bytes of a file: a public key is small, and a huge file is not one. */
async function readHead(file: string, max: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}
