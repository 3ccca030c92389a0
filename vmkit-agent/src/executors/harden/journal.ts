/**
 * The harden journal: the state of everything a harden run may change, captured and
 * written to disk before the first change, so a run killed half-way can be undone (or
 * finished) when the agent starts again.
 *
 *   <state>/harden/before.json    written once before any change: every file the plan
 *                                 names (bytes, mode, owner, or its absence) and
 *                                 whether each account existed
 *   <state>/harden/progress.json  the step boundaries passed, rewritten at each one
 *
 * Both are 0600, written through a temp file, fsync, rename and an fsync of the
 * directory. `before.json` present means a run is or was under way; the daemon clears
 * it once the command's result is journaled. Without a directory (dry runs, tests
 * calling the runner directly) the journal lives in memory only.
 */
import { lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorKeySchema } from '@vmkit/protocol';
import { z } from 'zod';
import { removeDurably, writeFileAtomic } from '../../durable.ts';
import { groupsOf, parseGroup, parsePasswd, shadowPassword } from './accounts.ts';
import { readText } from './snapshot.ts';
import type { HardenOutput, HardenPaths } from './types.ts';

const fileBackup = z.strictObject({
  path: z.string(),
  kind: z.enum(['file', 'dir', 'socket', 'absent']),
  /** base64 of the bytes, for files. */
  content: z.string().optional(),
  mode: z.number().int(),
  uid: z.number().int(),
  gid: z.number().int(),
});
export type FileBackup = z.infer<typeof fileBackup>;

const userBefore = z.strictObject({
  name: z.string(),
  existed: z.boolean(),
  home: z.string().optional(),
  shell: z.string().optional(),
  /** Supplementary groups (not the primary one). */
  groups: z.array(z.string()).optional(),
  /** The shadow password field (this file is as private as /etc/shadow). */
  password: z.string().nullable().optional(),
});
export type UserBefore = z.infer<typeof userBefore>;

const groupBefore = z.strictObject({ name: z.string(), existed: z.boolean() });

export const beforeSchema = z.strictObject({
  version: z.literal(1),
  command_id: z.string().nullable(),
  started_at: z.number(),
  files: z.array(fileBackup),
  /** null when the run does not manage accounts (a fixture root). */
  accounts: z.strictObject({ users: z.array(userBefore), groups: z.array(groupBefore) }).nullable(),
  /** The answer a completed run gives (steps, placement, docker), for finishing it after a restart. */
  output: z.record(z.string(), z.unknown()),
});
export type JournalBefore = z.infer<typeof beforeSchema>;

const finishedSchema = z.strictObject({
  ok: z.boolean(),
  error: z.strictObject({ key: errorKeySchema, message: z.string() }).optional(),
  output: z.record(z.string(), z.unknown()),
});
export type JournalFinished = z.infer<typeof finishedSchema>;

export const progressSchema = z.strictObject({
  version: z.literal(1),
  command_id: z.string().nullable(),
  /** Step boundaries passed, in order. */
  steps: z.array(z.string()),
  /** An sshd file may have changed from here on: a rollback reloads sshd. */
  sshd_touched: z.boolean(),
  /** The keys check, `sshd -t` and `sshd -T` all passed: what is left is the reload. */
  checks_passed: z.boolean(),
  finished: finishedSchema.optional(),
});
export type JournalProgress = z.infer<typeof progressSchema>;

export const BEFORE_FILE = 'before.json';
export const PROGRESS_FILE = 'progress.json';

/** The accounts a harden may create or change. */
export interface AccountNames {
  users: readonly { name: string; home: string }[];
  groups: readonly string[];
}

async function captureFile(path: string): Promise<FileBackup> {
  let s;
  try {
    s = await lstat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { path, kind: 'absent', mode: 0, uid: 0, gid: 0 };
    throw err;
  }
  const base = { path, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid };
  if (s.isFile()) return { ...base, kind: 'file', content: (await readFile(path)).toString('base64') };
  if (s.isDirectory()) return { ...base, kind: 'dir' };
  if (s.isSocket()) return { ...base, kind: 'socket' };
  throw new Error(`${path} is neither a file, a directory nor a socket; refusing to change it`);
}

async function captureAccounts(paths: HardenPaths, names: AccountNames): Promise<NonNullable<JournalBefore['accounts']>> {
  const users = parsePasswd(await readText(paths.passwd));
  const groups = parseGroup(await readText(paths.group));
  const shadow = await readText(paths.shadow).catch(() => null);
  return {
    users: names.users.map(({ name }) => {
      const u = users.find((x) => x.name === name);
      if (!u) return { name, existed: false };
      const primary = groups.find((g) => g.gid === u.gid)?.name;
      return {
        name,
        existed: true,
        home: u.home,
        shell: u.shell,
        groups: groupsOf(u, groups).filter((g) => g !== primary),
        password: shadowPassword(shadow, name),
      };
    }),
    groups: names.groups.map((name) => ({ name, existed: groups.some((g) => g.name === name) })),
  };
}

/** A harden run's journal; `step` marks each boundary, durably when there is a directory. */
export class HardenJournal {
  readonly before: JournalBefore;
  progress: JournalProgress;
  readonly #dir: string | undefined;
  readonly #onBoundary: ((step: string) => void) | undefined;

  private constructor(dir: string | undefined, before: JournalBefore, progress: JournalProgress, onBoundary?: (step: string) => void) {
    this.#dir = dir;
    this.before = before;
    this.progress = progress;
    this.#onBoundary = onBoundary;
  }

  /**
   * Captures every path (in order, first change first) and the accounts, then writes
   * the journal: nothing may change before this returns.
   */
  static async begin(opts: {
    dir?: string | undefined;
    commandId: string | null;
    paths: HardenPaths;
    files: readonly string[];
    accounts: AccountNames | null;
    output: HardenOutput;
    onBoundary?: ((step: string) => void) | undefined;
    now?: number;
  }): Promise<HardenJournal> {
    const files: FileBackup[] = [];
    for (const p of new Set(opts.files)) files.push(await captureFile(p));
    const before: JournalBefore = {
      version: 1,
      command_id: opts.commandId,
      started_at: opts.now ?? Date.now(),
      files,
      accounts: opts.accounts ? await captureAccounts(opts.paths, opts.accounts) : null,
      output: opts.output,
    };
    const progress: JournalProgress = { version: 1, command_id: opts.commandId, steps: [], sshd_touched: false, checks_passed: false };
    const j = new HardenJournal(opts.dir, before, progress, opts.onBoundary);
    if (opts.dir !== undefined) {
      // progress first: a before.json is never without its progress.
      await writeFileAtomic(join(opts.dir, PROGRESS_FILE), JSON.stringify(progress));
      await writeFileAtomic(join(opts.dir, BEFORE_FILE), JSON.stringify(before));
    }
    await j.step('journaled');
    return j;
  }

  /** Re-opens a journal found on disk (recovery). */
  static resume(dir: string, before: JournalBefore, progress: JournalProgress): HardenJournal {
    return new HardenJournal(dir, before, progress);
  }

  /** Records a boundary (durably), then lets a test-only hook stop the process there. */
  async step(name: string, flags: { sshdTouched?: boolean; checksPassed?: boolean } = {}): Promise<void> {
    this.progress = {
      ...this.progress,
      steps: [...this.progress.steps, name],
      sshd_touched: this.progress.sshd_touched || flags.sshdTouched === true,
      checks_passed: this.progress.checks_passed || flags.checksPassed === true,
    };
    await this.#persist();
    this.#onBoundary?.(name);
  }

  /** Records how the run ended; the journal stays until the daemon has journaled the result. */
  async finish(finished: JournalFinished): Promise<void> {
    this.progress = { ...this.progress, finished };
    await this.#persist();
    this.#onBoundary?.('finished');
  }

  async #persist(): Promise<void> {
    if (this.#dir !== undefined) await writeFileAtomic(join(this.#dir, PROGRESS_FILE), JSON.stringify(this.progress));
  }
}

export type JournalOnDisk =
  | { state: 'none' }
  | { state: 'found'; before: JournalBefore; progress: JournalProgress }
  | { state: 'unreadable'; reason: string };

/** Reads the journal in `dir`: none, a run to recover or clear, or files nobody can trust. */
export async function readHardenJournal(dir: string): Promise<JournalOnDisk> {
  const beforeText = await readText(join(dir, BEFORE_FILE));
  if (beforeText === null) return { state: 'none' };
  try {
    const before = beforeSchema.parse(JSON.parse(beforeText));
    const progress = progressSchema.parse(JSON.parse((await readText(join(dir, PROGRESS_FILE))) ?? 'null'));
    return { state: 'found', before, progress };
  } catch (err) {
    return { state: 'unreadable', reason: (err as Error).message.slice(0, 500) };
  }
}

/** Removes the journal: before.json first, as it is what marks a run under way. */
export async function clearHardenJournal(dir: string): Promise<void> {
  await removeDurably(join(dir, BEFORE_FILE));
  await removeDurably(join(dir, PROGRESS_FILE));
}
