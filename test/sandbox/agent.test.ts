import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, startSandbox } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  agent: { state: string; hostname: string | null } | null;
}

t.test('the real agent in a sandbox enrolls and connects to a control plane that listens on loopback only', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  t.match(cp.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const inst = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'agent-box' } });
  t.equal(inst.status, 201);
  const tok = await cp.api<{ token: string }>('POST', `/api/instances/${inst.body.id}/enrollment-token`);
  t.equal(tok.status, 201);

  const sb = await startSandbox(t, {
    instanceId: inst.body.id,
    name: 'agent-box',
    enrollment: { control_plane_url: cp.url, token: tok.body.token },
  });
  let agent: InstanceBody['agent'] = null;
  for (let i = 0; i < 120 && agent?.state !== 'connected'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    agent = (await cp.api<InstanceBody>('GET', `/api/instances/${inst.body.id}`)).body.agent;
  }
  const log = (f: string): string => (existsSync(join(sb.vm.dir, f)) ? readFileSync(join(sb.vm.dir, f), 'utf8') : '');
  t.equal(agent?.state, 'connected', `agent connected\n${log('supervisor.log')}\n${log('program.log')}`);
  t.equal(agent?.hostname, 'agent-box', 'it reports the sandbox hostname');
  const cfg = await sb.exec(['cat', '/etc/vmkit/agent.json']);
  t.match(cfg.stdout, /"instance_id": "inst_/, 'the agent config lives inside the sandbox');
  t.notOk(existsSync('/etc/vmkit/agent.json'), 'and not on the host');
  t.notOk(existsSync('/var/lib/vmkit-agent'), 'nor its state dir');
});
