import t from 'tap';
import { SPARE_FDS, planAgentsBench } from '../../scripts/bench/agents-plan.ts';
import type { AgentsBenchArgs } from '../../scripts/bench/agents-plan.ts';

const args = (over: Partial<AgentsBenchArgs> = {}): AgentsBenchArgs => ({
  agents: '3000',
  workers: '3',
  processes: '1',
  'handshakes-per-second': '200',
  database: 'sqlite',
  'skip-restart': false,
  ...over,
});
const limits = { nofile: 20_000, ephemeralPorts: 28_232 };
const errorOf = (plan: ReturnType<typeof planAgentsBench>) => ('error' in plan ? plan.error : undefined);

t.test('several control-plane processes need PostgreSQL', async (t) => {
  t.match(errorOf(planAgentsBench(args({ processes: '3' }), limits)), /--processes 3 needs --database postgres/);
  t.notOk(errorOf(planAgentsBench(args({ processes: '3', database: 'postgres' }), limits)));
});

t.test('counts that are not whole positive numbers are refused by name', async (t) => {
  t.match(errorOf(planAgentsBench(args({ processes: '0', database: 'postgres' }), limits)), /--processes must be a whole number/);
  t.match(errorOf(planAgentsBench(args({ agents: '1.5' }), limits)), /--agents must be a whole number/);
  t.match(errorOf(planAgentsBench(args({ workers: 'many' }), limits)), /--workers must be a whole number/);
  t.match(errorOf(planAgentsBench(args({ processes: '9', database: 'postgres' }), limits)), /at most 8/);
});

t.test('50,000 agents fit three processes and four workers under 20,000 descriptors, without the restart', async (t) => {
  const plan = planAgentsBench(args({ agents: '50000', workers: '4', processes: '3', database: 'postgres', 'skip-restart': true }), limits);
  if ('error' in plan) return t.fail(plan.error);
  t.equal(plan.perWorker, 12_500);
  t.ok(plan.perProcessAllowance > 50_000 / 3 && plan.perProcessAllowance + SPARE_FDS <= 20_000);
});

t.test('a run that does not fit says which process and what to change', async (t) => {
  const twoWorkers = errorOf(planAgentsBench(args({ agents: '50000', workers: '2', processes: '3', database: 'postgres', 'skip-restart': true }), limits));
  t.match(twoWorkers, /each worker process would hold 25000 agent sockets/);
  t.match(twoWorkers, /use at least 3 --workers/);
  t.notMatch(twoWorkers, /control-plane process/);
  // The restart phase sends one process's agents to the next: 2 × 16,667 does not fit.
  const withRestart = errorOf(planAgentsBench(args({ agents: '50000', workers: '4', processes: '3', database: 'postgres' }), limits));
  t.match(withRestart, /each control-plane process must be able to hold 33334 agent sockets/);
  t.match(withRestart, /--skip-restart/);
  t.match(errorOf(planAgentsBench(args({ agents: '30000', workers: '4' }), limits)), /the control plane would hold 30000 agent sockets/);
  t.match(errorOf(planAgentsBench(args({ agents: '19000', workers: '4' }), { nofile: 40_000, ephemeralPorts: 10_000 })), /more than the 10000 local ports/);
});
