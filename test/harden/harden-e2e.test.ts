import t from 'tap';
import { generateEd25519KeyPair } from '../../control-plane/src/shell/ssh-key.ts';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { deployKeyStoreOf } from '../../control-plane/src/services/harden/context.ts';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, sshRun } from '../helpers/sandbox.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import type { TestSandbox } from '../helpers/sandbox.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';
import { prerequisite } from '../helpers/prereq.ts';
import type { HardenBody } from '../helpers/harden-body.ts';

// Each case boots a sandbox VM with a real sshd and agent: give the file room.
t.setTimeout(480_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  hardened_at?: string | number | null;
  agent: { state: string } | null;
}

const ROOT_PASSWORD = 'fresh-cloud-vm-password';

const freshVm = (tt: { teardown(fn: () => unknown): void }, cp: TestControlPlane, name: string) =>
  startEnrolledVm(tt, cp, { name, rootPassword: ROOT_PASSWORD });

/** sha-256 and mtime of every file that hardening may touch, as seen inside the VM (mtime left out after a rollback, which rewrites the old bytes). */
async function fingerprint(sb: TestSandbox, withTimes = true): Promise<string> {
  const res = await sb.exec([
    'find', '/etc/ssh', '/etc/passwd', '/etc/group', '/etc/shadow', '/home', '-xdev', '-type', 'f',
    '-exec', 'stat', '-c', withTimes ? '%n %Y %a %U:%G' : '%n %a %U:%G', '{}', '+',
  ]);
  const sums = await sb.exec(['find', '/etc/ssh', '/etc/passwd', '/etc/group', '/home', '-xdev', '-type', 'f', '-exec', 'sha256sum', '{}', '+']);
  return `${res.stdout.split('\n').sort().join('\n')}\n${sums.stdout.split('\n').sort().join('\n')}`;
}

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const deployKey = await deployKeyStoreOf(cp.ctx).get(cp.workspaceId);

t.test('harden over REST: a fresh VM is hardened, verified from outside, and idempotent', needsSandbox, async (t) => {
  const { id, sb } = await freshVm(t, cp, 'web-1');
  const host = sb.vm.address;

  const before = await sshRun({ host, password: ROOT_PASSWORD }, 'id -un');
  t.equal(before.stdout.trim(), 'root', 'the fresh VM accepts root with a password');
  const rootKey = generateEd25519KeyPair('root@test');
  await sb.exec(['sh', '-c', 'mkdir -p /root/.ssh && chmod 700 /root/.ssh && cat > /root/.ssh/authorized_keys'], { input: `${rootKey.public}\n` });
  const withKey = await sshRun({ host, privateKey: rootKey.private }, 'id -un');
  t.equal(withKey.stdout.trim(), 'root', 'and root with a key');

  const res = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.equal(res.status, 200, JSON.stringify(res.body));
  t.equal(res.body.status, 'hardened');
  t.equal(res.body.instance_id, id);
  t.ok((res.body.steps ?? []).some((s) => s.changed), 'per-step detail says what changed');
  t.equal(res.body.verification?.ok, true, `verified from outside: ${JSON.stringify(res.body.verification)}`);

  await t.rejects(sshRun({ host, password: ROOT_PASSWORD }, 'true'), 'root with a password is refused');
  await t.rejects(sshRun({ host, privateKey: rootKey.private }, 'true'), 'root with a valid key is refused');
  await t.rejects(sshRun({ host, username: 'kamal', password: 'anything' }, 'true'), 'passwords are refused for kamal too');
  const kamal = await sshRun({ host, username: 'kamal', privateKey: deployKey.privateKey }, 'id');
  t.match(kamal.stdout, /uid=\d+\(kamal\).*\(docker\)/, 'kamal logs in with the deploy key and is in docker');

  const inst = await cp.api<InstanceBody>('GET', `/api/instances/${id}`);
  t.ok(inst.body.hardened_at, 'hardened_at is recorded on the instance');

  const printBefore = await fingerprint(sb);
  const again = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.equal(again.status, 200, JSON.stringify(again.body));
  t.equal(again.body.status, 'already_hardened');
  t.notOk((again.body.steps ?? []).some((s) => s.changed), 'no step changed anything');
  t.equal(await fingerprint(sb), printBefore, 'no file was touched (content, mtime, mode, owner)');

  const audit = await cp.api<{ items: Array<{ action: string; status: number; channel: string }> }>('GET', '/api/audit?action=instances.harden');
  t.equal(audit.body.items.length, 2, 'both calls are in the audit trail');

  const cmd = await cp.api<{ id: string; state: string; result: { status?: string } | null }>('GET', `/api/commands/${again.body.command_id}`);
  t.equal(cmd.status, 200);
  t.equal(cmd.body.state, 'succeeded');
  t.equal(cmd.body.result?.status, 'already_hardened', 'the command keeps the answer for pollers');

  const other = await cp.createWorkspace('other');
  const theirs = await cp.api<{ error: string }>('POST', `/api/instances/${id}/harden`, { key: other.adminKey, body: {} });
  t.equal(theirs.status, 404, "another workspace cannot harden this VM");
  t.equal(theirs.body.error, 'vm_not_provisioned');
  const theirCmd = await cp.api<{ error: string }>('GET', `/api/commands/${again.body.command_id}`, { key: other.adminKey });
  t.equal(theirCmd.status, 404, "nor read its commands");
  t.equal(theirCmd.body.error, 'command_not_found');
});

t.test('a sabotaged sshd config is rolled back byte for byte and the failed check is named', needsSandbox, async (t) => {
  const { id, sb } = await freshVm(t, cp, 'web-2');
  await sb.exec(['sh', '-c', 'printf "PasswordAuthentication yes\\nNoSuchKeyword yes\\n" > /etc/ssh/sshd_config.d/60-broken.conf']);
  const printBefore = await fingerprint(sb, false);
  const res = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.not(res.status, 200, JSON.stringify(res.body));
  t.match(res.body.error ?? '', /^sshd_(validation|effective_check)_failed$/, `the failed check is named: ${JSON.stringify(res.body)}`);
  t.equal(await fingerprint(sb, false), printBefore, 'every file is exactly as it was, kamal and docker created for the run deleted again');
  const detail = (res.body as { detail?: { accounts_restored?: string[] } }).detail;
  t.same(detail?.accounts_restored, ['user kamal deleted', 'group docker deleted'], 'the accounts the run created are deleted again, and the answer says so');
  const still = await sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'id -un');
  t.equal(still.stdout.trim(), 'root', 'the VM works as before (root password still accepted)');
});

t.test('hardening that would lock everyone out is refused with lockout_risk and changes nothing', needsSandbox, async (t) => {
  const { id, sb } = await freshVm(t, cp, 'web-3');
  await sb.exec(['sh', '-c', 'printf "AllowUsers root\\n" > /etc/ssh/sshd_config.d/10-allow.conf']);
  const printBefore = await fingerprint(sb);
  const res = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.equal(res.status, 409, JSON.stringify(res.body));
  t.equal(res.body.error, 'lockout_risk');
  t.equal(await fingerprint(sb), printBefore, 'nothing changed');
});

t.test('harden_vm through MCP: progress in order, hardened then already_hardened, contract errors', needsSandbox, async (t) => {
  const { id, sb } = await freshVm(t, cp, 'web-4');
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  t.teardown(() => client.close());
  const listed = await client.callTool({ name: 'list_instances', arguments: {} });
  t.notOk(listed.isError, textOf(listed));
  const mine = (listed.structuredContent as { instances: Array<{ id: string; agent: { state: string; last_seen: unknown } | null }> }).instances.find((i) => i.id === id);
  t.equal(mine?.agent?.state, 'connected', 'list_instances shows the agent connected');
  t.type(mine?.agent?.last_seen, 'string', "with the REST view's times (ISO 8601)");
  const one = await client.callTool({ name: 'get_instance', arguments: { instance_id: id } });
  t.notOk(one.isError, textOf(one));
  const progress: Array<{ progress: number; message?: string }> = [];
  const res = await client.callTool({ name: 'harden_vm', arguments: { instance_id: id } }, undefined, {
    onprogress: (p) => progress.push({ progress: p.progress, ...(p.message === undefined ? {} : { message: p.message }) }),
    timeout: 120_000,
  });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as HardenBody;
  // The output schema tools/list shows (portable JSON Schema) accepts the real answers.
  const listedSchema = (await client.listTools()).tools.find((x) => x.name === 'harden_vm')?.outputSchema;
  const fits = new AjvJsonSchemaValidator().getValidator(listedSchema ?? { type: 'null' });
  t.ok(fits(out).valid, 'the answer fits the listed output schema');
  t.equal(out.status, 'hardened');
  t.equal(out.instance_id, id);
  t.equal(out.verification?.ok, true);
  t.ok(progress.length >= 3, `progress notifications arrived (${progress.length})`);
  t.same(progress.map((p) => p.progress), [...progress.map((p) => p.progress)].sort((a, b) => a - b), 'in order');
  t.ok(progress.some((p) => /sshd/.test(p.message ?? '')), 'they name the steps');

  const again = await client.callTool({ name: 'harden_vm', arguments: { instance_id: id } }, undefined, { timeout: 120_000 });
  t.equal((again.structuredContent as HardenBody).status, 'already_hardened');
  t.ok(fits(again.structuredContent).valid, 'and so does already_hardened');

  const unknown = await client.callTool({ name: 'harden_vm', arguments: { instance_id: 'inst_01jx4n9abc' } });
  t.equal(unknown.isError, true);
  t.equal((JSON.parse(textOf(unknown)) as { error: string }).error, 'vm_not_provisioned');

  const narrow = await cp.createKey(['instances:read']);
  const weak = await connectMcp(`${cp.url}/mcp`, narrow.secret);
  const denied = await weak.callTool({ name: 'harden_vm', arguments: { instance_id: id } });
  t.equal(textOf(denied), AUTH_FAILED_TEXT, 'a key without instances:harden gets the contract sentence');
  await weak.close();

  await sb.destroy();
  let state = 'connected';
  for (let i = 0; i < 80 && state === 'connected'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    state = (await cp.api<InstanceBody>('GET', `/api/instances/${id}`)).body.agent?.state ?? '';
  }
  const offline = await client.callTool({ name: 'harden_vm', arguments: { instance_id: id } });
  t.equal(offline.isError, true);
  t.equal((JSON.parse(textOf(offline)) as { error: string }).error, 'agent_not_connected');
});

t.test('a cancelled harden_vm call stops sending progress at once; the harden still finishes', needsSandbox, async (t) => {
  const { id } = await freshVm(t, cp, 'web-5');
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  t.teardown(() => client.close());
  const abort = new AbortController();
  let afterCancel = 0;
  const call = client.callTool({ name: 'harden_vm', arguments: { instance_id: id } }, undefined, {
    signal: abort.signal,
    timeout: 120_000,
    onprogress: () => {
      if (abort.signal.aborted) afterCancel++;
      else abort.abort();
    },
  });
  await t.rejects(call, 'the client sees its own cancellation');
  // Joins the run still under way (or starts a new one if it is over) and waits for it.
  const joined = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.match(joined.body.status, /^(hardened|already_hardened)$/, JSON.stringify(joined.body));
  const again = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  t.equal(again.body.status, 'already_hardened', 'the VM ended hardened: the cancelled run completed on the agent');
  // Every step of the cancelled run has reported by now (the run is over), on the same session: none reached the caller.
  t.equal(afterCancel, 0, 'no progress after the cancellation');
});
