/**
 * Runs INSIDE `unshare -m` (started by harden-journal.test.ts): a private /run with
 * /run/sshd for `sshd -t`, then the harden runner on a fixture root with a journal
 * directory, SIGKILLing itself once the named step boundary is journaled, exactly as
 * an agent killed there would leave the disk.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';

const [root, journalDir, hostKey, deployKey, killAt] = process.argv.slice(2);
if (!root || !journalDir || !hostKey || !deployKey || !killAt) throw new Error('usage: harden-kill-child.ts <root> <journal dir> <host key> <deploy key> <boundary>');
execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run']);
mkdirSync('/run/sshd', { mode: 0o755 });

const r = await runHarden(
  { deploy_keys: [deployKey], dry_run: false },
  {
    root,
    manageAccounts: false,
    reload: 'skip',
    sshdArgs: ['-h', hostKey],
    journalDir,
    commandId: 'cmd_01testkill0000000000000000',
    onBoundary: (step) => {
      process.stdout.write(`boundary ${step}\n`);
      if (step === killAt) process.kill(process.pid, 'SIGKILL');
    },
  },
);
process.stdout.write(`${JSON.stringify(r)}\n`);
