/**
 * `vmkit-agent harden --dry-run [--deploy-key 'ssh-ed25519 ...'] [--root DIR] [--json]`:
 * prints the plan the harden command would carry out, changing nothing. Applying it is
 * left to the signed command from the control plane, so every change is audited there.
 */
import { parseArgs } from 'node:util';
import { sshPublicKeySchema } from '@vmkit/protocol';
import { parseKeyLine } from './authorized-keys.ts';
import { runHarden } from './runner.ts';
import type { HardenEnv, HardenOutcome } from './runner.ts';

export const HARDEN_USAGE = `usage: vmkit-agent harden --dry-run [--deploy-key 'ssh-ed25519 AAAA... name' ...] [--root DIR] [--json]

Prints what the harden command would change on this machine (kamal user, docker group
and socket, ~kamal/.ssh/authorized_keys, the sshd drop-in) and whether the lockout
guard would refuse. Nothing is changed; hardening itself runs only as a signed command.
  --root DIR   plan against a copy of a system under DIR (accounts and reload are not touched)
`;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const defaultIo: CliIo = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

function render(outcome: HardenOutcome, root: string): string {
  const o = outcome.output;
  const verdict = !outcome.ok ? `REFUSED (${outcome.error.key})` : o.status === 'hardened' ? 'would harden' : 'already hardened, nothing to do';
  const lines = [`harden plan for ${root} (dry run): ${verdict}; sshd placement ${o.placement}; docker ${o.docker}`];
  for (const s of o.steps) {
    const mark = s.detail?.startsWith('would change') ? '[change]' : '[ok]    ';
    const ba = s.before !== undefined || s.after !== undefined ? `${s.before ?? ''} -> ${s.after ?? ''}` : '';
    lines.push(`  ${mark} ${s.step.padEnd(16)} ${ba}`.trimEnd());
    const detail = s.detail?.replace(/^would change(; )?/, '');
    if (detail) lines.push(`           ${detail}`);
  }
  for (const n of o.notes ?? []) lines.push(`note: ${n}`);
  if (!outcome.ok) lines.push(`refused: ${outcome.error.message}`);
  return lines.join('\n') + '\n';
}

/** Runs the subcommand with its own arguments (after `harden`); returns the exit code. */
export async function hardenCli(argv: string[], io: CliIo = defaultIo, env: HardenEnv = {}): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        'dry-run': { type: 'boolean' },
        'deploy-key': { type: 'string', multiple: true },
        root: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.stderr(`vmkit-agent harden: ${(err as Error).message}\n${HARDEN_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(HARDEN_USAGE);
    return 0;
  }
  if (values['dry-run'] !== true) {
    io.stderr(`vmkit-agent harden: only --dry-run is available locally; hardening runs as a signed command from the control plane\n`);
    return 2;
  }
  const keys = values['deploy-key'] ?? [];
  for (const k of keys) {
    if (!sshPublicKeySchema.safeParse(k).success || parseKeyLine(k) === null) {
      io.stderr(`vmkit-agent harden: --deploy-key is not one OpenSSH public key line: ${k.slice(0, 40)}\n`);
      return 2;
    }
  }
  const root = values.root ?? env.root ?? '/';
  const outcome = await runHarden({ deploy_keys: keys, dry_run: true }, { ...env, root });
  io.stdout(values.json ? JSON.stringify(outcome, null, 2) + '\n' : render(outcome, root));
  return outcome.ok ? 0 : 1;
}
