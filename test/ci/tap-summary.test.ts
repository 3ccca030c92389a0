// .ci/run's closing line, read from tap's own output (samples copied from real runs).
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tapSummary } from '../../scripts/ci/tap-summary.ts';

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
