/**
 * Files made once and kept (keys, node id): created whole or not at all, never
 * overwritten, and never seen half-written by a process starting beside.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createFileOnce } from '../../control-plane/src/create-once.ts';

const dir = mkdtempSync(join(tmpdir(), 'vmk-create-once-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('creates a missing file with its mode, and keeps an existing one', async (t) => {
  const file = join(dir, 'a.key');
  t.equal(createFileOnce(file, 'first\n', 0o600), true, 'created');
  t.equal(readFileSync(file, 'utf8'), 'first\n');
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600');
  t.equal(createFileOnce(file, 'second\n', 0o600), false, 'not created again');
  t.equal(readFileSync(file, 'utf8'), 'first\n', 'the first content stays');
  writeFileSync(join(dir, 'b.key'), 'made by someone else');
  t.equal(createFileOnce(join(dir, 'b.key'), 'mine', 0o600), false);
  t.equal(readFileSync(join(dir, 'b.key'), 'utf8'), 'made by someone else');
  t.same(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
});

t.test('processes creating one file at once: one wins, and a reader only ever sees it whole', async (t) => {
  const file = join(dir, 'race.key');
  const size = 4 << 20; // large enough that a plain write takes several syscalls
  const code = `
    import { createFileOnce } from ${JSON.stringify(join(process.cwd(), 'control-plane/src/create-once.ts'))};
    const mark = process.argv.at(-1);
    const created = createFileOnce(${JSON.stringify(file)}, mark.repeat(${size}), 0o600);
    process.stdout.write(created ? 'created ' + mark : 'kept');
  `;
  const marks = ['a', 'b', 'c', 'd'];
  const partial: number[] = [];
  let reading = true;
  const reader = (async () => {
    while (reading) {
      if (existsSync(file)) {
        const len = readFileSync(file).length;
        if (len !== size) partial.push(len);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  const outputs = await Promise.all(
    marks.map(
      (mark) =>
        new Promise<string>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, mark], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('error', reject);
          child.on('exit', (c) => (c === 0 ? resolve(out) : reject(new Error(`child ${mark} exited ${c}`))));
        }),
    ),
  );
  reading = false;
  await reader;
  const winners = outputs.filter((o) => o.startsWith('created'));
  t.equal(winners.length, 1, `one process created it (${outputs.join(', ')})`);
  const winner = winners[0]?.split(' ')[1] ?? '';
  t.equal(readFileSync(file, 'utf8'), winner.repeat(size), "the file holds the winner's content, whole");
  t.same(partial, [], 'no reader saw it partly written');
  t.same(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
});
