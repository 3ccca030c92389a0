import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { LISTEN_BACKLOG } from '../../control-plane/src/server.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

/**
 * The control plane's accept queue: as deep as the kernel allows (net.core.somaxconn), not
 * Node's default 511, so a fleet dialling at once after a restart is not mostly dropped at
 * SYN time. `ss` shows a listening socket's queue limit as its Send-Q.
 */
const SS = '/usr/bin/ss';
const missing = existsSync(SS) ? undefined : 'ss (iproute2) is not installed';
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI installs it`);

t.test('the listening socket asks for the largest accept queue the kernel gives', { skip: missing }, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const port = new URL(cp.url).port;
  const line = execFileSync(SS, ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim();
  const sendQ = Number(line.split(/\s+/)[2]);
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  t.equal(sendQ, Math.min(LISTEN_BACKLOG, somaxconn), `accept queue ${sendQ} (somaxconn ${somaxconn})`);
  t.ok(sendQ > 511 || somaxconn <= 511, 'deeper than Node’s default wherever the kernel allows it');
});
