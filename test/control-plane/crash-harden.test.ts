// A control plane killed with SIGKILL while its harden command runs on a real agent,
// then started again on the same data dir and port: the agent re-sends its journaled
// result and the follow-up (outside SSH check, hardened_at, audit row) still happens.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { deployKeyContext } from '../../control-plane/src/services/harden/deploy-keys.ts';
import { eventually, serverRows } from '../helpers/cp-process.ts';
import { crashRig } from '../helpers/crash-rig.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason, sshRun } from '../helpers/sandbox.ts';

t.setTimeout(600_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

/** The workspace's deploy private key as the server keeps it: a file (SQLite), or a sealed row (PostgreSQL). */
async function serverDeployKey(dataDir: string, workspaceId: string): Promise<string> {
  const file = join(dataDir, 'deploy-keys', workspaceId);
  if (existsSync(file)) return readFileSync(file, 'utf8');
  const [row] = await serverRows<{ sealed_private_key: string }>(dataDir, 'select sealed_private_key from deploy_keys where workspace_id = ?', [workspaceId]);
  if (!row) throw new Error(`no deploy key for ${workspaceId}`);
  return SecretBox.forDataDir(dataDir).open(row.sealed_private_key, deployKeyContext(workspaceId));
}

interface InstanceBody {
  id: string;
  status: string;
  hardened_at: string | null;
  ssh: { host: string } | null;
  agent: { state: string } | null;
}
interface CommandBody {
  state: string;
  result: { status?: string; command_id?: string; verification?: { ok: boolean | null } } | null;
  error: unknown;
}
interface AuditBody {
  items: Array<{ action: string; status: number; target_ids: Record<string, string> | null }>;
}

t.test('killed 0.3 s into a harden: after the restart the command succeeds, is verified over SSH, hardened_at is set and audited', needsSandbox, async (t) => {
  const { dataDir, start } = await crashRig(t);
  const first = await start();

  const made = await first.api<InstanceBody>('POST', '/api/instances', { name: 'web-1', provider: 'local' }, 180_000);
  t.equal(made.status, 201, JSON.stringify(made.body));
  const id = made.body.id;
  await eventually('the agent connecting', async () => {
    const got = await first.api<InstanceBody>('GET', `/api/instances/${id}`);
    return got.body.agent?.state === 'connected' ? got.body : undefined;
  });

  const hardenCommand = () => serverRows<{ id: string; state: string }>(dataDir, "select id, state from commands where instance_id = ? and type = 'harden'", [id]);
  const answer = first.api('POST', `/api/instances/${id}/harden`, { wait_ms: 120_000 }, 180_000).catch((err: unknown) => err);
  // The agent has it: acked or reporting progress, not finished.
  const cmd = await eventually('the agent working on the harden command', async () => {
    const c = (await hardenCommand())[0];
    return c !== undefined && (c.state === 'acked' || c.state === 'running') ? c : undefined;
  }, 120_000, 20);
  first.kill('SIGKILL');
  await first.exited;
  t.type(await answer, Error, 'the harden request died with the process');

  const restarted = await start();
  const inst = await eventually('hardened_at after the restart', async () => {
    const got = await restarted.api<InstanceBody>('GET', `/api/instances/${id}`);
    return got.body.hardened_at !== null ? got.body : undefined;
  }, 240_000, 250);
  t.ok(inst.hardened_at, 'hardened_at is set');
  t.ok(restarted.logs.some((l) => l.msg === 'harden: resumed follow-ups a restart left owed'), 'by the restarted process, which found the follow-up owed');
  t.equal((await hardenCommand()).length, 1, 'no second harden command was sent');

  const view = await restarted.api<CommandBody>('GET', `/api/commands/${cmd.id}`);
  t.equal(view.body.state, 'succeeded', 'the command succeeded');
  t.equal(view.body.result?.status, 'hardened');
  t.equal(view.body.result?.verification?.ok, true, `verified from outside over SSH: ${JSON.stringify(view.body.result?.verification)}`);

  const audit = await restarted.api<AuditBody>('GET', '/api/audit?action=instances.harden.completed');
  t.equal(audit.body.items.length, 1, 'one audit row for the outcome');
  t.same(audit.body.items[0]?.target_ids, { id, command_id: cmd.id });
  t.equal(audit.body.items[0]?.status, 200);

  const [{ workspace_id: workspaceId } = { workspace_id: '' }] = await serverRows<{ workspace_id: string }>(dataDir, 'select workspace_id from instances where id = ?', [id]);
  const key = await serverDeployKey(dataDir, workspaceId);
  const kamal = await sshRun({ host: inst.ssh?.host ?? '', username: 'kamal', privateKey: key }, 'id');
  t.match(kamal.stdout, /\(kamal\).*\(docker\)/, 'kamal logs in with the deploy key');

  const again = await restarted.api<{ status: string; command_id: string }>('POST', `/api/instances/${id}/harden`, { wait_ms: 120_000 }, 180_000);
  t.equal(again.status, 200, JSON.stringify(again.body));
  t.equal(again.body.status, 'already_hardened', 'a later harden finds the VM hardened');
});
