import type { AddressInfo } from 'node:net';
import { constants } from 'node:os';
import ssh2 from 'ssh2';
import { SHELL_ENV_NAME } from '@vmkit/protocol';
import type { AuthContext, Connection, ServerChannel, Session } from 'ssh2';
import type { Db } from '../db/index.ts';
import { insertAudit } from '../db/audit.ts';
import { findSshKeyByFingerprint, touchSshKey } from '../db/ssh-keys.ts';
import { isApiError } from '../errors.ts';
import type { GatewayHostKey } from './host-key.ts';
import { isTermName } from './operator-wire.ts';
import type { ShellCaller, ShellEnd, ShellSession, ShellSessionService } from './session.ts';
import { sendAuthBanner } from './ssh-banner.ts';
import { sshFingerprint } from './ssh-key.ts';

/** Variables an operator's ssh client may pass (`SendEnv`): the agent's allowlist (locale, time zone, COLORTERM). */
const ENV_ALLOWED = SHELL_ENV_NAME;
const MAX_ENV = 32;
/** Failed public-key attempts before the connection is dropped (OpenSSH's MaxAuthTries is 6; the harden policy uses 3). */
const MAX_AUTH_FAILURES = 6;
/** The exit status of a session the gateway refused or ended itself (ssh uses 255 for its own failures). */
const REFUSED_STATUS = 1;
const TRANSFER_REFUSED =
  'vmkit: file transfer (scp, sftp) is not available through the VMKit SSH gateway; it opens shells and runs commands only.\r\n';

export interface SshGatewayOptions {
  db: Db;
  sessions: ShellSessionService;
  hostKey: GatewayHostKey;
  now: () => number;
  logger: { debug(obj: object, msg?: string): void; info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

interface Identity {
  caller: ShellCaller;
  /** The login name: the instance's id or name. */
  instance: string;
}

/**
 * `ssh -p 2222 <instance>@<control plane>`: an ssh2 server that authenticates operators
 * by the public keys registered on their API keys and relays `shell`/`exec` sessions
 * (with `pty-req`, `window-change`, allowlisted `env`) to the instance's agent through
 * the session service, which authorizes, records and audits exactly as for the
 * WebSocket door. The login name is the instance's id or name.
 */
export class SshGateway {
  readonly #o: SshGatewayOptions;
  readonly #server: ssh2.Server;
  readonly #clients = new Set<Connection>();

  constructor(opts: SshGatewayOptions) {
    this.#o = opts;
    this.#server = new ssh2.Server({ hostKeys: [opts.hostKey.privateKey], ident: 'VMKit' }, (client, info) => this.#connection(client, info.ip));
    this.#server.on('error', (err: Error) => opts.logger.warn({ err }, 'ssh gateway error'));
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  address(): AddressInfo | null {
    return this.#server.address() as AddressInfo | null;
  }

  close(): Promise<void> {
    for (const c of this.#clients) c.end();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #connection(client: Connection, ip: string): void {
    this.#clients.add(client);
    // Keystrokes are single small packets: with Nagle's algorithm each echo waits on the
    // peer's delayed ACK (~40 ms per hop). OpenSSH sets TCP_NODELAY for sessions too.
    // ssh2's server-side connection has setNoDelay; @types/ssh2 leaves it out.
    (client as Connection & { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    let identity: Identity | undefined;
    let failures = 0;
    client.on('authentication', (ctx: AuthContext) => {
      void this.#authenticate(ctx, ip).then(
        (outcome) => {
          if (outcome === 'query') return;
          if ('caller' in outcome) {
            identity = outcome;
            ctx.accept();
            return;
          }
          // Before the failure message: OpenSSH prints it, then "Permission denied".
          if (outcome.banner !== null && !sendAuthBanner(ctx, outcome.banner)) {
            this.#o.logger.debug({ ip }, 'ssh gateway: the refusal banner could not be sent');
          }
          ctx.reject(['publickey']);
          if (++failures >= MAX_AUTH_FAILURES) client.end();
        },
        (err: unknown) => {
          this.#o.logger.warn({ err }, 'ssh gateway authentication failed');
          ctx.reject(['publickey']);
        },
      );
    });
    client.on('ready', () => {
      client.on('session', (accept) => {
        if (identity) this.#session(accept(), identity);
      });
    });
    client.on('error', (err: Error) => this.#o.logger.debug({ err, ip }, 'ssh gateway client error'));
    client.on('close', () => this.#clients.delete(client));
  }

  /**
   * Identity on a verified signature; 'query' when the client only asked whether a key
   * would do; else a refusal, with the banner that tells the operator why (null: none,
   * e.g. the `none` method every client starts with).
   */
  async #authenticate(ctx: AuthContext, ip: string): Promise<Identity | 'query' | { banner: string | null }> {
    if (ctx.method !== 'publickey') return { banner: null };
    const { db, now } = this.#o;
    const fingerprint = sshFingerprint(ctx.key.data);
    const found = await findSshKeyByFingerprint(db, fingerprint);
    if (!found || !found.sshKey.publicKey) return { banner: unregisteredBanner(fingerprint) };
    const { sshKey, apiKey } = found;
    if (!ctx.signature || !ctx.blob) {
      // Registered: let the client prove it holds the key. Whether its API key still
      // works is said only to the key's holder, after the signature.
      ctx.accept();
      return 'query';
    }
    const parsed = ssh2.utils.parseKey(sshKey.publicKey);
    if (parsed instanceof Error || !parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) return { banner: null };
    const t = now();
    const dead = apiKey.revokedAt !== null ? 'has been revoked' : apiKey.expiresAt !== null && apiKey.expiresAt <= t ? 'has expired' : null;
    if (dead) {
      // A real operator whose key no longer works: on their audit trail, then refused.
      await insertAudit(db, {
        at: t,
        workspaceId: apiKey.workspaceId,
        keyId: apiKey.id,
        channel: 'shell',
        tool: null,
        action: 'shell.refused',
        method: null,
        route: null,
        targetIds: { instance: ctx.username.slice(0, 128), via: 'ssh', ssh_key_id: sshKey.id },
        status: 401,
        errorKey: 'unauthorized',
        requestId: null,
        clientAddress: ip,
      });
      return { banner: `vmkit: the SSH key ${fingerprint} is registered on the API key ${apiKey.id}, which ${dead}; sign in with a key registered on a valid API key.` };
    }
    await touchSshKey(db, sshKey.id, t);
    return {
      caller: { workspaceId: apiKey.workspaceId, keyId: apiKey.id, scopes: apiKey.scopes, sshKeyId: sshKey.id, clientAddress: ip },
      instance: ctx.username,
    };
  }

  #session(sshSession: Session, who: Identity): void {
    let pty: { cols: number; rows: number; term: string } | undefined;
    const env: Record<string, string> = {};
    let live: ShellSession | undefined;
    let pendingSize: { cols: number; rows: number } | undefined;
    let started = false;

    sshSession.on('pty', (accept, reject, info) => {
      if (started) return reject();
      pty = {
        cols: clamp(info.cols),
        rows: clamp(info.rows),
        term: isTermName(info.term) ? info.term : 'xterm-256color',
      };
      accept();
    });
    sshSession.on('window-change', (accept, _reject, info) => {
      const size = { cols: clamp(info.cols), rows: clamp(info.rows) };
      if (live) live.resize(size.cols, size.rows);
      else pendingSize = size;
      accept?.();
    });
    sshSession.on('env', (accept, reject, info) => {
      if (started || !ENV_ALLOWED.test(info.key) || Object.keys(env).length >= MAX_ENV || info.val.length > 1024) return reject?.();
      env[info.key] = info.val;
      accept?.();
    });
    sshSession.on('subsystem', (accept, _reject, info) => {
      const channel = accept();
      this.#refuse(channel, info.name === 'sftp' ? TRANSFER_REFUSED : `vmkit: the subsystem "${info.name.slice(0, 40)}" is not available.\r\n`);
    });
    sshSession.on('auth-agent', (_accept, reject) => reject?.());
    sshSession.on('x11', (_accept, reject) => reject?.());
    const start = (channel: ServerChannel, command: string | undefined) => {
      started = true;
      void this.#start(channel, who.caller, who.instance, pty, env, command).then((s) => {
        live = s;
        if (s && pendingSize) s.resize(pendingSize.cols, pendingSize.rows);
      });
    };
    sshSession.on('shell', (accept, reject) => {
      if (started) return reject();
      start(accept(), undefined);
    });
    sshSession.on('exec', (accept, reject, info) => {
      if (started) return reject();
      const channel = accept();
      // Legacy scp runs `scp -t/-f` as a command: refused as clearly as the sftp subsystem.
      if (/^\s*scp(\s|$)/.test(info.command)) return this.#refuse(channel, TRANSFER_REFUSED);
      start(channel, info.command);
    });
  }

  async #start(
    channel: ServerChannel,
    caller: ShellCaller,
    instance: string,
    pty: { cols: number; rows: number; term: string } | undefined,
    env: Record<string, string>,
    command: string | undefined,
  ): Promise<ShellSession | undefined> {
    let session: ShellSession;
    try {
      session = await this.#o.sessions.open({
        caller,
        door: 'ssh',
        instance,
        cols: pty?.cols ?? 80,
        rows: pty?.rows ?? 24,
        // No pty-req (`ssh host cmd`): the agent still runs a PTY, told it is a dumb one.
        term: pty?.term ?? 'dumb',
        ...(Object.keys(env).length > 0 && { env }),
        ...(command !== undefined && { command }),
      });
    } catch (err) {
      const message = isApiError(err) ? `${err.key}: ${err.message}` : 'the session could not be opened';
      this.#refuse(channel, `vmkit: ${message}\r\n`);
      return undefined;
    }
    if (!channel.writable) {
      void session.terminate('operator_closed');
      return undefined;
    }
    let inFlight = 0;
    let ended: ShellEnd | undefined;
    const finish = () => {
      if (!ended || inFlight > 0) return;
      const end = ended;
      ended = undefined;
      if (end.message !== null && end.reason !== 'exit') channel.stderr.write(`\r\nvmkit: session closed: ${end.message}\r\n`);
      if (end.signal !== null && end.code === null) channel.exit(end.signal.replace(/^SIG/, ''), false, '');
      else channel.exit(end.code ?? REFUSED_STATUS);
      channel.end();
    };
    session.onOutput((chunk, done) => {
      if (!channel.writable) return done();
      inFlight++;
      // ssh2 calls back once the data fits the client's window: that is when credit goes back.
      channel.write(chunk, () => {
        inFlight--;
        done();
        finish();
      });
    });
    session.onDrain(() => channel.resume());
    session.onEnd((end) => {
      ended = end;
      finish();
    });
    channel.on('data', (data: Buffer) => {
      if (!session.write(data)) channel.pause();
    });
    channel.on('end', () => session.eof());
    channel.on('close', () => {
      if (!session.ended) void session.terminate('operator_closed');
    });
    return session;
  }

  #refuse(channel: ServerChannel, message: string): void {
    channel.stderr.write(message);
    channel.exit(REFUSED_STATUS);
    channel.end();
  }
}

function unregisteredBanner(fingerprint: string): string {
  return (
    `vmkit: the SSH key ${fingerprint} is not registered with this VMKit control plane.\r\n` +
    'vmkit: register its public key on your API key (one with the shell scope): vmkit ssh-keys add KEY_ID --file ~/.ssh/id_ed25519.pub\r\n'
  );
}

function clamp(n: number): number {
  return Math.min(1000, Math.max(1, Math.floor(n) || 1));
}

/** `SIGTERM` → 15; unknown names → null. */
export function signalNumber(name: string): number | null {
  const key = (name.startsWith('SIG') ? name : `SIG${name}`) as keyof typeof constants.signals;
  return constants.signals[key] ?? null;
}
