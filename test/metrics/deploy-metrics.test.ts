// Deploy step durations by step and outcome: a deploy whose VM is made on the Hetzner
// stand-in (provisioning succeeds) and whose agent never dials in (waiting_for_agent
// runs out of time), scraped from /metrics.
import t from 'tap';
import { HetznerComputeProvider } from '../../control-plane/src/providers/compute/hetzner.ts';
import { FULL, deployRig } from '../helpers/deploy-rig.ts';
import { FakeHetzner } from '../helpers/fake-hetzner.ts';
import { parsePromText } from '../helpers/prom-text.ts';

t.setTimeout(300_000);

t.test('each deploy step that ran is timed under its step and outcome', async (t) => {
  const hetzner = await FakeHetzner.start({ token: 'metrics-token', actionMs: 20 });
  t.teardown(() => hetzner.close());
  const cloud = new HetznerComputeProvider({ token: 'metrics-token', baseUrl: hetzner.url, pollIntervalMs: 10 });
  const rig = await deployRig(t, { wrapCompute: () => cloud, timings: { stepTimeoutMs: { waiting_for_agent: 1_500 } } });
  await rig.deploy();
  rig.fake.writes.mergePull(FULL, 1);
  const started = await rig.deploy();
  const done = await rig.until(started.body.deploy_id ?? '', (d) => d.status !== 'running');
  t.match(done, { status: 'failed', failed_step: 'waiting_for_agent', error_key: 'deploy_step_timed_out' });

  const res = await fetch(`${rig.cp.url}/metrics`, { headers: { authorization: `Bearer ${rig.cp.adminKey}` } });
  const s = parsePromText(await res.text());
  t.equal(s.value('vmkit_deploy_step_duration_seconds_count', { step: 'provisioning', outcome: 'succeeded' }), 1);
  t.equal(s.value('vmkit_deploy_step_duration_seconds_count', { step: 'waiting_for_agent', outcome: 'failed' }), 1);
  t.ok((s.value('vmkit_deploy_step_duration_seconds_sum', { step: 'waiting_for_agent', outcome: 'failed' }) ?? 0) >= 1.5, 'it ran until its timeout');
  t.same(
    s.samples('vmkit_deploy_step_duration_seconds_count').map((x) => `${x.labels.step}:${x.labels.outcome}`).sort(),
    ['provisioning:succeeded', 'waiting_for_agent:failed'],
    'steps that did not run are not reported',
  );
});
