import { execFile } from '../../child-process.ts';
import type { ErrorKey } from '@vmkit/protocol';

export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** Looks an account up through NSS (`getent passwd`), so directory users work too. */
export function lookupAccount(name: string): Promise<Account | undefined> {
  return new Promise((resolve, reject) => {
    execFile('getent', ['passwd', '--', name], { timeout: 10_000 }, (err, stdout) => {
      // getent exits 2 for "no such key".
      if (err) return (err as { code?: unknown }).code === 2 ? resolve(undefined) : reject(new Error(`getent passwd failed: ${err.message}`));
      const f = stdout.trim().split('\n')[0]?.split(':') ?? [];
      if (f.length < 7 || f[0] !== name) return resolve(undefined);
      resolve({ name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/', shell: f[6] ?? '' });
    });
  });
}

/** Shells that mean "this account does not log in". */
const NO_LOGIN = /(^|\/)(nologin|false)$/;

export type AccountVerdict = { ok: true; account: Account } | { ok: false; key: ErrorKey; message: string };

/**
 * Whether a session may run as this account: it exists, has a login shell, is root
 * only when allowed, and is another user only when the agent can switch to it.
 */
export function judgeAccount(name: string, account: Account | undefined, opts: { allowRoot: boolean; selfUid: number }): AccountVerdict {
  if (!account) return { ok: false, key: 'shell_user_refused', message: `user ${name} does not exist on this VM` };
  if (account.uid === 0 && !opts.allowRoot) {
    return { ok: false, key: 'shell_user_refused', message: `${name} is root (uid 0); this agent's config does not allow root shells (shell.allow_root)` };
  }
  if (account.shell === '' || NO_LOGIN.test(account.shell)) {
    return { ok: false, key: 'shell_user_refused', message: `user ${name} has no login shell (${account.shell || 'none'})` };
  }
  if (opts.selfUid !== 0 && account.uid !== opts.selfUid) {
    return { ok: false, key: 'shell_user_refused', message: `the agent does not run as root, so it cannot open a shell as ${name}` };
  }
  return { ok: true, account };
}

const BASE_PATH = '/usr/local/bin:/usr/bin:/bin';
const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A clean environment: what login(1) would set, TERM, and the allowlisted names the operator sent. */
export function sessionEnv(account: Account, term: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...extra,
    HOME: account.home,
    USER: account.name,
    LOGNAME: account.name,
    SHELL: account.shell,
    PATH: account.uid === 0 ? ROOT_PATH : BASE_PATH,
    TERM: term,
  };
}

/**
 * The program and arguments that start the session. Another user is reached through
 * util-linux setpriv, which also sets the supplementary groups (node-pty's own uid/gid
 * switch does not, and would leave root's groups on the shell).
 */
export function sessionArgv(account: Account, selfUid: number, command: string | undefined, setpriv = '/usr/bin/setpriv'): { file: string; args: string[] } {
  const shellArgs = command === undefined ? ['-l'] : ['-c', command];
  if (account.uid === selfUid) return { file: account.shell, args: shellArgs };
  return {
    file: setpriv,
    args: [`--reuid=${account.uid}`, `--regid=${account.gid}`, '--init-groups', '--', account.shell, ...shellArgs],
  };
}
