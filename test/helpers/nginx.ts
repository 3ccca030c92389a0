/**
 * Debian's nginx as the load balancer in front of control-plane processes: a
 * configuration of its own in a temp prefix (pid, logs, temp files there), run in the
 * foreground as a child of the test (`nginx -c <conf> -p <prefix> -g 'daemon off;'`),
 * never touching /etc/nginx or the system service. The `location /` block is the one the
 * README shows: round-robin, WebSocket upgrade passed through, X-Forwarded-* set, TLS
 * terminated here.
 *
 *   const lb = await startNginx(t, { dir, port, upstreams: [p1, p2, p3], certFile, keyFile });
 *   lb.accessLog()   // [{ tag, upstream, status, uri }] per request
 *   const api = lbApi(lb.url, caPem, adminKey);  // JSON over https://, { tag } sent as X-Test-Tag
 */
import { spawn } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { accessSync, chmodSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { ApiRequestOptions, ApiResponse } from './control-plane.ts';
import { freePort, startControlPlaneProcess } from './cp-process.ts';
import type { ControlPlaneProcess } from './cp-process.ts';
import type { Missing } from './prereq.ts';

export const NGINX = '/usr/sbin/nginx';

/** Why nginx tests cannot run here, or false. */
export function nginxMissing(): Missing {
  try {
    accessSync(NGINX, constants.X_OK);
    return false;
  } catch {
    return `${NGINX} not found: apt-get install nginx`;
  }
}

export interface NginxOptions {
  /** The prefix: nginx.conf, nginx.pid, error.log, access.log, temp folders. */
  dir: string;
  /** 127.0.0.1:<port> with TLS. */
  port: number;
  /** Control-plane processes on 127.0.0.1. */
  upstreams: number[];
  certFile: string;
  keyFile: string;
}

export interface AccessLine {
  /** The request's X-Test-Tag header ('-' without one). */
  tag: string;
  /** Upstream address(es) nginx tried, as `$upstream_addr` ('127.0.0.1:p1, 127.0.0.1:p2' when it moved on). */
  upstream: string;
  status: number;
  request: string;
}

export interface RunningNginx {
  url: string;
  /** Every request nginx has logged so far. */
  accessLog(): AccessLine[];
  errorLog(): string;
  stop(): Promise<void>;
}

/** The proxying part of the configuration (as in the README), for one upstream block named vmkit. */
export const NGINX_LOCATION = `
    location / {
        proxy_pass http://vmkit;
        proxy_http_version 1.1;
        # WebSocket upgrade (agents on /agent/v1/connect, operator shells): passed through.
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        # Agent connections live for days, long-polls and MCP streams for minutes.
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
        proxy_buffering off;
        client_max_body_size 10m;
    }`;

function config(o: NginxOptions): string {
  const p = (n: string) => join(o.dir, n);
  return `worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} info;
events { worker_connections 1024; }
http {
    log_format lb '$http_x_test_tag|$upstream_addr|$status|$request';
    access_log ${p('access.log')} lb;
    client_body_temp_path ${p('tmp/body')};
    proxy_temp_path ${p('tmp/proxy')};
    fastcgi_temp_path ${p('tmp/fastcgi')};
    uwsgi_temp_path ${p('tmp/uwsgi')};
    scgi_temp_path ${p('tmp/scgi')};

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
    upstream vmkit {
${o.upstreams.map((port) => `        server 127.0.0.1:${port};`).join('\n')}
    }
    server {
        listen 127.0.0.1:${o.port} ssl;
        server_name localhost;
        ssl_certificate ${o.certFile};
        ssl_certificate_key ${o.keyFile};
        ssl_protocols TLSv1.2 TLSv1.3;
${NGINX_LOCATION}
    }
}
`;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startNginx(t: { teardown(fn: () => unknown): void }, o: NginxOptions): Promise<RunningNginx> {
  mkdirSync(join(o.dir, 'tmp'), { recursive: true });
  // Workers run as nobody when the test runs as root: they must reach the temp folders.
  chmodSync(o.dir, 0o755);
  chmodSync(join(o.dir, 'tmp'), 0o755);
  const conf = join(o.dir, 'nginx.conf');
  writeFileSync(conf, config(o));
  const child = spawn(NGINX, ['-c', conf, '-p', o.dir, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async (): Promise<void> => {
    if (!gone) child.kill('SIGTERM'); // fast shutdown: open agent WebSockets are closed, not waited for
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  t.teardown(stop);
  const errorLog = (): string => (existsSync(join(o.dir, 'error.log')) ? readFileSync(join(o.dir, 'error.log'), 'utf8') : '');
  // Ready once it accepts connections (it binds before it forks the worker, which then accepts).
  const deadline = Date.now() + 60_000;
  while (!(await portOpen(o.port))) {
    if (gone) throw new Error(`nginx exited at start: ${stderr}\n${errorLog()}`);
    if (Date.now() > deadline) throw new Error(`nginx not listening on ${o.port} within 60 s: ${stderr}\n${errorLog()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `https://127.0.0.1:${o.port}`,
    accessLog() {
      const file = join(o.dir, 'access.log');
      if (!existsSync(file)) return [];
      return readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          const [tag = '', upstream = '', status = '0', ...rest] = l.split('|');
          return { tag, upstream, status: Number(status), request: rest.join('|') };
        });
    },
    errorLog,
    stop,
  };
}

/** JSON over https:// trusting only `ca`; `tag` goes out as X-Test-Tag so nginx's log names the request. */
export function lbApi(base: string, ca: string, adminKey: string) {
  return async <T = unknown>(method: string, path: string, opts: ApiRequestOptions & { tag?: string } = {}): Promise<ApiResponse<T>> => {
    const key = opts.key === undefined ? adminKey : opts.key;
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (key !== null) headers.authorization = `Bearer ${key}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (opts.tag !== undefined) headers['x-test-tag'] = opts.tag;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(new URL(path, base), { method, headers, ca, agent: false, timeout: 60_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text === '' ? null : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h.set(k, v);
          resolve({ status: res.statusCode ?? 0, headers: h, body: parsed as T });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
      req.on('error', reject);
      req.end(body);
    });
  };
}

/**
 * Control-plane `serve` processes (one per node id) on one database behind one nginx
 * with TLS: the first creates the schema and the workspace, the others are given the
 * operator's admin key. Each is killed with SIGKILL at teardown.
 */
export async function startNginxFleet(
  t: { teardown(fn: () => unknown): void },
  o: { dir: string; nodeIds: string[]; env: (nodeId: string) => Record<string, string>; lbPort: number; certFile: string; keyFile: string },
): Promise<{ procs: ControlPlaneProcess[]; ports: number[]; adminKey: string; lb: RunningNginx }> {
  const ports: number[] = [];
  for (const _ of o.nodeIds) ports.push(await freePort());
  const dirs = o.nodeIds.map((id) => mkdtempSync(join(o.dir, `${id}-`)));
  const procs: ControlPlaneProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) {
      p.kill('SIGKILL');
      await p.exited;
    }
  });
  const [firstDir = '', ...otherDirs] = dirs;
  procs.push(await startControlPlaneProcess({ dataDir: firstDir, port: ports[0] ?? 0, env: o.env(o.nodeIds[0] ?? '') }));
  for (const d of otherDirs) copyFileSync(join(firstDir, 'admin.key'), join(d, 'admin.key'));
  procs.push(
    ...(await Promise.all(otherDirs.map((d, i) => startControlPlaneProcess({ dataDir: d, port: ports[i + 1] ?? 0, env: o.env(o.nodeIds[i + 1] ?? '') })))),
  );
  const lb = await startNginx(t, { dir: join(o.dir, 'nginx'), port: o.lbPort, upstreams: ports, certFile: o.certFile, keyFile: o.keyFile });
  return { procs, ports, adminKey: procs[0]?.adminKey ?? '', lb };
}
