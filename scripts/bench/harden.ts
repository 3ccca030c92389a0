/**
 * harden_vm benchmark (root only: it boots local sandbox VMs with a real sshd and agent).
 *
 *   node --import tsx scripts/bench/harden.ts [--runs 3]
 *
 * For each run: a fresh VM is hardened through the REST API (the agent does every step
 * locally, then the control plane verifies over SSH), then hardened again (already
 * hardened). Beside it, the same steps driven the way SSH-based tools do them: one SSH
 * connection from the control plane per step, as root with the VM's password. Prints
 * p50 of each and the ratio. Figures, not assertions.
 */
import { parseArgs } from 'node:util';
import { cpus, loadavg } from 'node:os';
import ssh2 from 'ssh2';
import { generateEd25519KeyPair } from '../../control-plane/src/shell/ssh-key.ts';
import { startTestControlPlane } from '../../test/helpers/control-plane.ts';
import { sandboxSkipReason, sshRun } from '../../test/helpers/sandbox.ts';
import { startEnrolledVm } from '../../test/helpers/enrolled-vm.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const RUNS = Number(values.runs);

if (sandboxSkipReason) {
  process.stdout.write(`harden: skipped (${sandboxSkipReason})\n`);
  process.exit(0);
}

const cleanups: Array<() => unknown> = [];
const teardown = { teardown: (fn: () => unknown) => void cleanups.push(fn) };
const PASSWORD = 'bench-root-password';
const cp = await startTestControlPlane();
cleanups.push(() => cp.close());

const freshVm = (name: string) => startEnrolledVm(teardown, cp, { name, rootPassword: PASSWORD });

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function harden(id: string, want: string): Promise<void> {
  const res = await cp.api<{ status: string }>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
  if (res.status !== 200 || res.body.status !== want) throw new Error(`harden ${id}: ${res.status} ${JSON.stringify(res.body)}`);
}

/** The steps of hardening as SSH-driven tools run them: one connection and command per step. */
async function sshDriven(host: string, deployPublicKey: string): Promise<void> {
  const dropIn = 'PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n';
  const steps: Array<[string, string?]> = [
    ['getent group docker || groupadd docker'],
    ['id kamal || useradd -m -s /bin/bash -G docker kamal'],
    ['usermod -aG docker kamal'],
    ['install -d -m 700 -o kamal -g kamal /home/kamal/.ssh'],
    ['cat > /home/kamal/.ssh/authorized_keys', `${deployPublicKey}\n`],
    ['chown kamal:kamal /home/kamal/.ssh/authorized_keys && chmod 600 /home/kamal/.ssh/authorized_keys'],
    ['cp -a /etc/ssh/sshd_config /etc/ssh/sshd_config.vmkit-backup'],
    ['cat > /etc/ssh/sshd_config.d/00-hardening.conf', dropIn],
    ['sshd -t'],
    ['sshd -T -C user=root,host=localhost,addr=127.0.0.1 | grep -Ei "^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication) "'],
    ['sshd -T -C user=kamal,host=localhost,addr=127.0.0.1 | grep -Ei "^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication) "'],
    ['kill -HUP "$(cat /run/sshd.pid)"'],
  ];
  for (const [command, input] of steps) {
    const res = await sshRunWithInput(host, command, input);
    if (res !== 0) throw new Error(`ssh step failed (${res}): ${command}`);
  }
}

function sshRunWithInput(host: string, command: string, input?: string): Promise<number | null> {
  if (input === undefined) return sshRun({ host, password: PASSWORD }, command).then((r) => r.code);
  return new Promise((resolve, reject) => {
    const conn = new ssh2.Client();
    conn.on('error', reject);
    conn.on('ready', () => {
      conn.exec(command, (err, stream) => {
        if (err) return reject(err);
        let code: number | null = null;
        stream.on('exit', (c: number | null) => (code = c));
        stream.on('close', () => {
          conn.end();
          resolve(code);
        });
        stream.resume();
        stream.stderr.resume();
        stream.end(input);
      });
    });
    conn.connect({ host, port: 22, username: 'root', password: PASSWORD, tryKeyboard: false, readyTimeout: 15_000 });
  });
}

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;

try {
  const fresh: number[] = [];
  const again: number[] = [];
  const viaSsh: number[] = [];
  const deployKey = generateEd25519KeyPair('bench').public;
  for (let i = 0; i < RUNS; i++) {
    const vm = await freshVm(`bench-${i}`);
    fresh.push(await timed(() => harden(vm.id, 'hardened')));
    again.push(await timed(() => harden(vm.id, 'already_hardened')));
    const other = await freshVm(`bench-ssh-${i}`);
    viaSsh.push(await timed(() => sshDriven(other.sb.vm.address, deployKey)));
    await vm.sb.destroy();
    await other.sb.destroy();
  }
  const f = p50(fresh);
  const a = p50(again);
  const s = p50(viaSsh);
  process.stdout.write(
    [
      `harden: p50 of ${RUNS} runs, local sandbox VMs, ${cpus().length} CPUs, load ${loadavg()[0]?.toFixed(1)}`,
      `  harden_vm, fresh VM (agent steps + outside SSH verification): ${f.toFixed(0)} ms`,
      `  harden_vm, already hardened (checks only, nothing written):   ${a.toFixed(0)} ms`,
      `  same steps driven over SSH, one connection per step (${12} steps, no verification): ${s.toFixed(0)} ms`,
      `  ratio SSH-driven / harden_vm: fresh ${(s / f).toFixed(2)}x, already hardened ${(s / a).toFixed(2)}x`,
      '',
    ].join('\n'),
  );
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
