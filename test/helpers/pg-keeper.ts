/**
 * Keeps a throwaway PostgreSQL cluster for one test run (started by test/helpers/postgres.ts,
 * detached, never by hand):
 *
 *   node --import tsx test/helpers/pg-keeper.ts <dir> <pid-to-outlive>
 *
 * initdb into <dir>/data (as the `postgres` user when we are root: postgres refuses
 * root), starts postgres on a Unix socket in <dir> only (no TCP), writes
 * <dir>/ready.json (or <dir>/failed.json with the reason), then stops the cluster and
 * removes <dir> once <pid-to-outlive> (the tap runner, or a lone test process) is gone.
 * fsync and full-page writes are off: nothing here must survive a crash.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postgresBinDir } from './pg-bin.ts';

const [dir, watchArg] = process.argv.slice(2);
if (!dir || !watchArg) throw new Error('usage: pg-keeper.ts <dir> <pid>');
const watchPid = Number(watchArg);

function publish(name: 'ready.json' | 'failed.json', body: Record<string, unknown>): void {
  const tmp = join(dir ?? '', `.${name}.tmp`);
  writeFileSync(tmp, JSON.stringify(body));
  renameSync(tmp, join(dir ?? '', name));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Calls `then` once the process we outlive is gone. A once-a-second check: this is a
 * janitor for the end of the run, nothing waits on it.
 */
function outlive(then: () => void): void {
  const watch = setInterval(() => {
    if (alive(watchPid)) return;
    clearInterval(watch);
    then();
  }, 1000);
}

/** Says why in failed.json (the waiting test files read it), and clears up when the run ends. */
function fail(reason: string): void {
  publish('failed.json', { reason });
  outlive(() => rmSync(dir ?? '', { recursive: true, force: true }));
}

function start(root: string): void {
  const bin = postgresBinDir();
  if (!bin) return fail('no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin: apt-get install postgresql');
  const asRoot = process.getuid?.() === 0;
  let ids: { uid: number; gid: number } | undefined;
  if (asRoot) {
    try {
      ids = {
        uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
        gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
      };
    } catch {
      return fail("running as root, and there is no `postgres` user to run the cluster as (Debian's postgresql package makes it)");
    }
    chownSync(root, ids.uid, ids.gid);
  }
  const data = join(root, 'data');
  try {
    execFileSync(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8', '--no-instructions'],
      { stdio: ['ignore', 'ignore', 'pipe'], ...ids },
    );
  } catch (err) {
    return fail(`initdb failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`);
  }
  const server = spawn(
    join(bin, 'postgres'),
    ['-D', data, '-k', root, '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=300'],
    { stdio: ['ignore', 'ignore', 'pipe'], ...ids },
  );
  let log = '';
  let ready = false;
  server.stderr.setEncoding('utf8');
  server.stderr.on('data', (chunk: string) => {
    if (ready) return;
    log += chunk;
    if (log.includes('database system is ready to accept connections')) {
      ready = true;
      log = '';
      publish('ready.json', { socketDir: root, user: 'postgres', keeperPid: process.pid });
    }
  });
  server.on('exit', (code, signal) => {
    if (!ready) return fail(`postgres exited (${signal ?? code}) before it was ready: ${log.trim().slice(-2000)}`);
    rmSync(root, { recursive: true, force: true });
    process.exit(0);
  });
  // The run is over when the process we outlive is gone: fast shutdown, then the folder goes (on exit above).
  outlive(() => server.kill('SIGINT'));
}

start(dir);
