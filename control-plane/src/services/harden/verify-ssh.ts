import ssh2 from 'ssh2';
import type { AuthenticationType, AuthHandlerMiddleware, NextAuthHandler } from 'ssh2';

export interface SshCheck {
  check: 'password_not_offered' | 'keyboard_interactive_not_offered' | 'root_refused' | 'kamal_accepted' | 'kamal_in_docker';
  ok: boolean;
  detail: string;
}

export interface Verification {
  ok: boolean;
  checks: SshCheck[];
  /** Authentication methods the server offered to root after `none`. */
  offered_methods: string[];
}

export interface VerifyTarget {
  host: string;
  port: number;
  /** The deploy private key (OpenSSH format) that kamal must accept. */
  privateKey: string;
  timeoutMs?: number;
}

interface RootProbe {
  offered: string[];
  accepted: boolean;
  error?: string;
}

/** Logs in as root with `none` (to learn the offered methods), then with the key; expects refusal. */
function probeRoot(t: VerifyTarget): Promise<RootProbe> {
  return new Promise((resolve) => {
    const conn = new ssh2.Client();
    let offered: string[] = [];
    let step = 0;
    const done = (r: RootProbe) => {
      conn.end();
      resolve(r);
    };
    const authHandler: AuthHandlerMiddleware = (methodsLeft: AuthenticationType[], _partial: boolean, next: NextAuthHandler) => {
      step += 1;
      if (step === 1) return next({ type: 'none', username: 'root' });
      if (step === 2) {
        offered = [...(methodsLeft ?? [])];
        if (offered.includes('publickey')) return next({ type: 'publickey', username: 'root', key: t.privateKey });
      }
      return next(false as unknown as Parameters<NextAuthHandler>[0]);
    };
    conn.on('ready', () => done({ offered, accepted: true }));
    conn.on('error', (err) => done({ offered, accepted: false, error: err.message }));
    conn.connect({ host: t.host, port: t.port, username: 'root', readyTimeout: t.timeoutMs ?? 10_000, authHandler });
  });
}

interface KamalProbe {
  accepted: boolean;
  idOutput?: string;
  error?: string;
}

/** Logs in as kamal with the deploy key and reads `id kamal`. */
function probeKamal(t: VerifyTarget): Promise<KamalProbe> {
  return new Promise((resolve) => {
    const conn = new ssh2.Client();
    let settled = false;
    const done = (r: KamalProbe) => {
      if (settled) return;
      settled = true;
      conn.end();
      resolve(r);
    };
    conn.on('ready', () => {
      conn.exec('id kamal', (err, stream) => {
        if (err) return done({ accepted: true, error: err.message });
        let out = '';
        stream.on('data', (d: Buffer) => {
          out += d.toString('utf8');
        });
        stream.stderr.on('data', () => undefined);
        stream.on('close', () => done({ accepted: true, idOutput: out.trim() }));
      });
    });
    conn.on('error', (err) => done({ accepted: false, error: err.message }));
    conn.connect({
      host: t.host,
      port: t.port,
      username: 'kamal',
      privateKey: t.privateKey,
      readyTimeout: t.timeoutMs ?? 10_000,
      tryKeyboard: false,
    });
  });
}

/**
 * What an attacker sees from outside after hardening: no password or keyboard-
 * interactive login offered, root refused even with a key, and kamal accepted with
 * the deploy key and in the docker group. Every failed check is reported.
 */
export async function verifyOverSsh(target: VerifyTarget): Promise<Verification> {
  const root = await probeRoot(target);
  const kamal = await probeKamal(target);
  const groups = /groups=(.*)$/.exec(kamal.idOutput ?? '')?.[1] ?? '';
  const checks: SshCheck[] = [
    {
      check: 'password_not_offered',
      ok: !root.offered.includes('password'),
      detail: `offered: ${root.offered.join(',') || 'none'}`,
    },
    {
      check: 'keyboard_interactive_not_offered',
      ok: !root.offered.includes('keyboard-interactive'),
      detail: `offered: ${root.offered.join(',') || 'none'}`,
    },
    { check: 'root_refused', ok: !root.accepted, detail: root.accepted ? 'root logged in' : 'root login refused' },
    {
      check: 'kamal_accepted',
      ok: kamal.accepted,
      detail: kamal.accepted ? 'kamal logged in with the deploy key' : `kamal refused: ${kamal.error ?? 'unknown'}`,
    },
    {
      check: 'kamal_in_docker',
      ok: /\(docker\)/.test(groups),
      detail: kamal.idOutput ?? kamal.error ?? 'no output',
    },
  ];
  return { ok: checks.every((c) => c.ok), checks, offered_methods: root.offered };
}
