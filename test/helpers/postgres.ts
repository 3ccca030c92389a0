/**
 * PostgreSQL for tests: one throwaway cluster per test run, a database per caller.
 *
 *   const db = await createTestDatabase();           // { url, name, drop() }
 *   t.teardown(() => db.drop());
 *
 * The first test file of a `tap` run that needs PostgreSQL starts the cluster
 * (test/helpers/pg-keeper.ts, detached: initdb in a temp dir, a Unix socket there, no
 * TCP); the others find it through a folder named after the run (the tap runner's pid
 * and start time: tap's own process ids are per file, which once gave every file a
 * cluster of its own, 106 at once in a run on PostgreSQL). The keeper stops the
 * cluster and removes the folder when the tap runner exits. Measured here: a cluster
 * costs ~2.3 s to make and start on this loaded 2-core machine, a database ~0.5 s, so
 * files share the cluster and each gets databases of its own.
 *
 * Which database a test file's control planes use: VMKIT_TEST_DATABASE=postgres runs
 * them on PostgreSQL (test/postgres/*.test.ts set it to re-run whole files);
 * default SQLite. Data-layer tests loop over `testDialects()` instead.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { postgresBinDir } from './pg-bin.ts';
import type { Missing } from './prereq.ts';

export type TestDialect = 'sqlite' | 'postgres';

/** The dialect VMKIT_TEST_DATABASE asks this file's control planes to use (default sqlite). */
export function selectedTestDatabase(): TestDialect {
  const v = process.env.VMKIT_TEST_DATABASE;
  if (v === undefined || v === '' || v === 'sqlite') return 'sqlite';
  if (v === 'postgres') return 'postgres';
  throw new Error(`VMKIT_TEST_DATABASE must be sqlite or postgres, got ${JSON.stringify(v)}`);
}

/** Why PostgreSQL tests cannot run here (for prerequisite()/fileNeeds()), or false. */
export function postgresMissing(): Missing {
  if (!postgresBinDir()) return 'PostgreSQL server programs not found (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql';
  if (process.getuid?.() === 0 && !readFileSync('/etc/passwd', 'utf8').split('\n').some((l) => l.startsWith('postgres:'))) {
    return 'running as root without a `postgres` user to run the test cluster as (postgres refuses root)';
  }
  return false;
}

interface Cluster {
  socketDir: string;
  user: string;
}

let cluster: Promise<Cluster> | undefined;

/** The run's cluster, started by whichever file asks first. */
function runCluster(): Promise<Cluster> {
  cluster ??= acquire();
  return cluster;
}

// A bound for a stuck start, not a speed check (initdb on a loaded machine takes seconds).
const START_TIMEOUT_MS = 120_000;

async function acquire(): Promise<Cluster> {
  // tap gives every process of one run the same _TAPJS_PROCESSINFO_ROOT_; the runner is our parent.
  // Under tap every test file is a child of the runner (TAP=1); tap's own ids are per file,
  // so the run is named by the runner's pid and start time (a pid alone could be reused).
  const runner = process.env.TAP === '1' ? processStart(process.ppid) : undefined;
  const key = runner !== undefined ? `run${process.ppid}-${runner}` : `pid${process.pid}`;
  const outlive = runner !== undefined ? process.ppid : process.pid;
  const dir = join(tmpdir(), `vmkit-test-pg-${process.getuid?.() ?? 'u'}-${key}`);
  let starter = false;
  try {
    mkdirSync(dir, { mode: 0o700 });
    starter = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (starter) {
    // Not one of tap's processes: no coverage hooks, no stdio tying it to the test's pipes.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('_TAPJS') && k !== 'NODE_OPTIONS'));
    const keeper = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'pg-keeper.ts'), dir, String(outlive)], {
      cwd: join(import.meta.dirname, '..', '..'),
      detached: true,
      stdio: 'ignore',
      env,
    });
    keeper.unref();
  }
  return waitForCluster(dir);
}

/** A process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or undefined. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (the command) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function waitForCluster(dir: string): Promise<Cluster> {
  return new Promise<Cluster>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | null, c?: Cluster) => {
      if (done) return;
      done = true;
      watcher.close();
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(c as Cluster);
    };
    const check = () => {
      const failed = join(dir, 'failed.json');
      const ready = join(dir, 'ready.json');
      if (existsSync(failed)) {
        const { reason } = JSON.parse(readFileSync(failed, 'utf8')) as { reason: string };
        finish(new Error(`the test PostgreSQL cluster did not start: ${reason}`));
      } else if (existsSync(ready)) {
        finish(null, JSON.parse(readFileSync(ready, 'utf8')) as Cluster);
      }
    };
    const watcher = watch(dir, check);
    const timer = setTimeout(() => finish(new Error(`the test PostgreSQL cluster in ${dir} was not ready after ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    timer.unref();
    check();
  });
}

function urlOf(c: Cluster, database: string): string {
  return `postgres://${c.user}@localhost/${database}?host=${encodeURIComponent(c.socketDir)}`;
}

async function admin<T>(c: Cluster, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: c.socketDir, user: c.user, database: 'postgres' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  /** postgres:// URL of a new, empty database (no tables: openDatabase migrates it). */
  url: string;
  name: string;
  /** Drops it (connections still open are ended). Idempotent. */
  drop(): Promise<void>;
}

let databases = 0;

/** A new empty database on the run's cluster. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const c = await runCluster();
  databases += 1;
  const name = `vmkit_${process.pid}_${databases}`;
  await admin(c, (client) => client.query(`CREATE DATABASE ${name}`));
  let dropped: Promise<void> | undefined;
  return {
    url: urlOf(c, name),
    name,
    drop() {
      dropped ??= admin(c, async (client) => {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
      return dropped;
    },
  };
}

/** The PostgreSQL database of each data dir this process made one for (a restart on the dir finds it again). */
const dataDirDatabases = new Map<string, Promise<TestDatabase>>();

/**
 * The database a control plane on `dataDir` uses when VMKIT_TEST_DATABASE=postgres: made on
 * the first ask, the same one for every later start on that dir (in-process or `serve`).
 */
export function testDatabaseFor(dataDir: string): Promise<TestDatabase> {
  let db = dataDirDatabases.get(dataDir);
  if (!db) {
    db = createTestDatabase();
    dataDirDatabases.set(dataDir, db);
    // A failed create is not kept: the next start asks again.
    db.catch(() => dataDirDatabases.delete(dataDir));
  }
  return db;
}

/** Drops the data dir's database, if one was made (idempotent). */
export async function dropTestDatabaseFor(dataDir: string): Promise<void> {
  const db = dataDirDatabases.get(dataDir);
  if (!db) return;
  dataDirDatabases.delete(dataDir);
  await (await db).drop();
}

/** The dialects a data-layer test runs on: both, PostgreSQL only where it can run. */
export function testDialects(): { dialect: TestDialect; skip: Missing }[] {
  return [
    { dialect: 'sqlite', skip: false },
    { dialect: 'postgres', skip: postgresMissing() },
  ];
}
