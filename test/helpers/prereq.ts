/**
 * Tests that need something this machine may lack (root, sshd, namespaces, a tool).
 * A missing prerequisite is a real tap skip that carries its reason, never a pass.
 * Under CI=true it fails instead: CI installs everything (.ci/run), so a skip there
 * would hide tests that silently stopped running.
 *
 *   t.test('...', { skip: prerequisite(sandboxSkipReason) }, async (t) => { ... });
 *
 *   // a whole file whose set-up already needs the prerequisite:
 *   if (fileNeeds(await cannotRunSshd())) { ...set-up and tests... }
 */
import t from 'tap';

/** Why something cannot run here; false, null or undefined when nothing is missing. */
export type Missing = string | false | null | undefined;

const failed = new Set<string>();

/**
 * The `skip` value for a test that needs a prerequisite: false when it is there,
 * else the reason. Under CI=true a missing prerequisite also records a failure
 * (once per reason) in the file.
 */
export function prerequisite(missing: Missing): string | false {
  if (missing === false || missing === null || missing === undefined || missing === '') return false;
  if (process.env.CI === 'true' && !failed.has(missing)) {
    failed.add(missing);
    t.fail(`missing prerequisite under CI=true (CI must install it): ${missing}`);
  }
  return missing;
}

/**
 * For a file whose every test (and its set-up) needs the prerequisite: true when it
 * may run. Otherwise the file reports itself skipped with the reason (or fails under
 * CI=true), and the caller must define no tests and start nothing.
 */
export function fileNeeds(missing: Missing): boolean {
  const reason = prerequisite(missing);
  if (reason === false) return true;
  if (process.env.CI !== 'true') t.plan(0, reason);
  return false;
}
