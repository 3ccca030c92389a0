import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AsciicastWriter, RecordingWriteError, parseAsciicast } from '../../control-plane/src/shell/recording.ts';
import { prerequisite } from '../helpers/prereq.ts';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-rec-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function writer(now?: () => number): AsciicastWriter {
  return new AsciicastWriter(join(dir, 'recordings', `s${++n}.cast`), { width: 100, height: 30, timestamp: 1_700_000_000, term: 'xterm-256color', title: 'web-1' }, now);
}

t.test('the header says asciicast v2 with the size, start time, TERM and title', async (t) => {
  const w = writer();
  w.close();
  const { header } = parseAsciicast(readFileSync(w.path, 'utf8'));
  t.same(header, { version: 2, width: 100, height: 30, timestamp: 1_700_000_000, env: { TERM: 'xterm-256color' }, title: 'web-1' });
});

t.test('output, resizes and input become [seconds, kind, data] events in order', async (t) => {
  let clock = 1000;
  const w = writer(() => clock);
  clock = 1500;
  w.output(Buffer.from('hello\r\n'));
  clock = 2250;
  w.resize(120, 40);
  w.input(Buffer.from('ls\r'));
  w.close();
  t.same(parseAsciicast(readFileSync(w.path, 'utf8')).events, [
    [0.5, 'o', 'hello\r\n'],
    [1.25, 'r', '120x40'],
    [1.25, 'i', 'ls\r'],
  ]);
});

t.test('each event is on disk as soon as it is written, before the file is closed', async (t) => {
  const w = writer();
  w.output(Buffer.from('first'));
  t.same(parseAsciicast(readFileSync(w.path, 'utf8')).events.map((e) => e[2]), ['first']);
  w.output(Buffer.from('second'));
  t.same(parseAsciicast(readFileSync(w.path, 'utf8')).events.map((e) => e[2]), ['first', 'second']);
  w.close();
});

t.test('a UTF-8 character split across two chunks is kept whole', async (t) => {
  const w = writer();
  const bytes = Buffer.from('héllo €', 'utf8');
  w.output(bytes.subarray(0, 2));
  w.output(bytes.subarray(2, bytes.length - 1));
  w.output(bytes.subarray(bytes.length - 1));
  w.close();
  const text = parseAsciicast(readFileSync(w.path, 'utf8')).events.map((e) => e[2]).join('');
  t.equal(text, 'héllo €');
});

t.test('the file is readable by its owner only, its directory too', async (t) => {
  const w = writer();
  w.close();
  t.equal(statSync(w.path).mode & 0o777, 0o600);
  t.equal(statSync(join(dir, 'recordings')).mode & 0o777, 0o700);
});

t.test('an existing recording is never overwritten', async (t) => {
  const path = join(dir, 'taken.cast');
  writeFileSync(path, 'keep me');
  t.throws(() => new AsciicastWriter(path, { width: 80, height: 24, timestamp: 0, term: 'xterm', title: 'x' }), RecordingWriteError);
  t.equal(readFileSync(path, 'utf8'), 'keep me');
});

t.test('a recording that cannot be created is a RecordingWriteError', async (t) => {
  const file = join(dir, 'a-file');
  writeFileSync(file, '');
  t.throws(() => new AsciicastWriter(join(file, 'under-a-file.cast'), { width: 80, height: 24, timestamp: 0, term: 'xterm', title: 'x' }), RecordingWriteError);
});

t.test('writing after close is a RecordingWriteError, closing twice is fine', async (t) => {
  const w = writer();
  w.close();
  w.close();
  t.throws(() => w.output(Buffer.from('late')), RecordingWriteError);
});

const noAsciinema =
  spawnSync('asciinema', ['--version']).status !== 0
    ? 'asciinema is not installed (apt-get install asciinema)'
    : spawnSync('script', ['--version']).status !== 0
      ? 'script(1) from util-linux is not installed'
      : false;
t.test('asciinema itself plays the file back', { skip: prerequisite(noAsciinema) }, async (t) => {
  const w = writer();
  w.output(Buffer.from('played back by asciinema\r\n'));
  w.resize(90, 20);
  w.close();
  // asciinema opens /dev/tty even to cat: give it one with script(1). The path is ours (mkdtemp), no quoting issue.
  const cat = spawnSync('script', ['-q', '-e', '-c', `asciinema cat '${w.path}'`, '/dev/null'], { encoding: 'utf8' });
  t.equal(cat.status, 0, cat.stderr);
  t.match(cat.stdout, 'played back by asciinema');
});
