import { z } from 'zod';
import { lazySchema } from './lazy.ts';

/**
 * A VM's SSH host public keys as the agent reports them at enrollment, one OpenSSH
 * line each (`type base64 [comment]`, the format of /etc/ssh/ssh_host_*_key.pub).
 * The deploy workflow writes them into known_hosts, so they are checked as keys,
 * not trusted as text: a known type, base64 whose blob names that same type, and a
 * printable comment.
 */
export const SSH_HOST_KEY_TYPES = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa'] as const;
/** One per type with room to spare; sshd rarely holds more than three. */
export const MAX_SSH_HOST_KEYS = 8;
/** An RSA-16384 line is about 2.8 KB; nothing legitimate is longer. */
export const MAX_SSH_HOST_KEY_LENGTH = 4096;

const LINE = /^([a-z0-9-]+) ([A-Za-z0-9+/]+={0,2})(?: ([\x20-\x7e]{0,256}))?$/;

/** Why `line` is not an SSH host public key line, or null when it is one. */
export function sshHostKeyProblem(line: string): string | null {
  if (line.length > MAX_SSH_HOST_KEY_LENGTH) return `must be at most ${MAX_SSH_HOST_KEY_LENGTH} characters`;
  const m = LINE.exec(line);
  if (!m) return 'must be an OpenSSH public key line: type, base64 key, optional comment';
  const [, type, b64] = m as unknown as [string, string, string];
  if (!(SSH_HOST_KEY_TYPES as readonly string[]).includes(type)) return `key type ${type} is not one of ${SSH_HOST_KEY_TYPES.join(', ')}`;
  const blob = Buffer.from(b64, 'base64');
  if (blob.toString('base64') !== b64) return 'the key is not canonical base64';
  // The blob starts with the key type as an SSH string (uint32 length, then bytes).
  if (blob.length < 4) return 'the key blob is too short';
  const n = blob.readUInt32BE(0);
  if (n + 4 > blob.length || blob.subarray(4, 4 + n).toString('latin1') !== type) return `the key blob does not hold a ${type} key`;
  return null;
}

export const sshHostKeySchema = lazySchema(() =>
  z.string().superRefine((value, ctx) => {
    const problem = sshHostKeyProblem(value);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  }),
);

// Counted in a refinement rather than with .max(): zod applies .max() to whatever
// arrives, so a string in place of the list would be reported twice.
export const sshHostKeysSchema = lazySchema(() =>
  z.array(sshHostKeySchema).superRefine((keys, ctx) => {
    if (keys.length > MAX_SSH_HOST_KEYS) ctx.addIssue({ code: 'custom', message: `must list at most ${MAX_SSH_HOST_KEYS} keys` });
    else if (new Set(keys.map((k) => k.split(' ').slice(0, 2).join(' '))).size !== keys.length) ctx.addIssue({ code: 'custom', message: 'must not list a key twice' });
  }),
);
