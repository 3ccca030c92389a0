import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { fileNeeds } from '../helpers/prereq.ts';

/**
 * What OpenSSH's own `ssh` shows when the gateway refuses: a sentence saying why on the
 * user's stderr (an SSH banner sent before the failure), not only "Permission denied".
 * Every refusal here happens before any agent is involved: no VM needed.
 */

const noSsh = spawnSync('ssh', ['-V']).error || spawnSync('ssh-keygen', ['-?']).error ? 'OpenSSH client (ssh, ssh-keygen) is not installed' : false;

if (fileNeeds(noSsh)) {
  const cp = await startTestControlPlane({ config: { sshGateway: { port: 0, host: '127.0.0.1', required: true } } });
  t.teardown(() => cp.close());
  const gw = cp.ctx.sshGateway;
  if (!gw) throw new Error('the SSH gateway is not listening');
  await cp.api('POST', '/api/instances', { body: { name: 'gw-vm' } });

  const dir = mkdtempSync(join(tmpdir(), 'vmkit-ssh-refusals-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${gw.port} ${gw.hostKey.publicKey}\n`);
  const keygen = (name: string) => {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)]);
    return join(dir, name);
  };
  const fingerprint = (file: string) => spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).stdout.split(' ')[1] ?? '';

  // OpenSSH as an operator runs it: default log level (banners shown), no BatchMode, no tty.
  const ssh = (identity: string, target: string) =>
    new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(
        'ssh',
        ['-p', String(gw.port), '-i', identity, '-o', 'IdentitiesOnly=yes', '-o', 'PasswordAuthentication=no', '-o', 'KbdInteractiveAuthentication=no',
          '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'GlobalKnownHostsFile=/dev/null', '-F', '/dev/null', target, 'true'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.on('close', (code) => resolve({ code, err }));
    });

  t.test('an unregistered key: the user is told which key and how to register it', async (t) => {
    const stranger = keygen('stranger');
    const r = await ssh(stranger, 'gw-vm@127.0.0.1');
    t.equal(r.code, 255);
    t.match(r.err, `vmkit: the SSH key ${fingerprint(stranger)} is not registered with this VMKit control plane.`);
    t.match(r.err, 'vmkit ssh-keys add KEY_ID --file');
    t.match(r.err, /Permission denied \(publickey\)/, 'still refused');
  });

  t.test('a key registered on a revoked API key: told so after proving it holds the key, audited', async (t) => {
    const gone = await cp.createKey(['shell'], { name: 'gone' });
    const file = keygen('gone');
    const added = await cp.api('POST', `/api/keys/${gone.id}/ssh-keys`, { body: { public_key: readFileSync(`${file}.pub`, 'utf8') } });
    t.equal(added.status, 201);
    await cp.api('DELETE', `/api/keys/${gone.id}`);
    const r = await ssh(file, 'gw-vm@127.0.0.1');
    t.equal(r.code, 255);
    t.match(r.err, `vmkit: the SSH key ${fingerprint(file)} is registered on the API key ${gone.id}, which has been revoked`);
    const audit = await cp.api<{ items: { error_key: string; target_ids: Record<string, string> }[] }>('GET', `/api/audit?action=shell.refused&key_id=${gone.id}`);
    t.match(audit.body.items[0], { error_key: 'unauthorized', target_ids: { via: 'ssh', instance: 'gw-vm' } });
  });

  t.test('a registered key and an unknown instance: the refusal names the instance, status 1', async (t) => {
    const op = await cp.createKey(['shell'], { name: 'operator' });
    const file = keygen('operator');
    await cp.api('POST', `/api/keys/${op.id}/ssh-keys`, { body: { public_key: readFileSync(`${file}.pub`, 'utf8') } });
    const r = await ssh(file, 'no-such-vm@127.0.0.1');
    t.equal(r.code, 1);
    t.match(r.err, 'vmkit: instance_not_found: No instance "no-such-vm"');
    t.notMatch(r.err, /Permission denied/);
  });

  t.test('a registered key, a known instance without agent: agent_not_connected, status 1', async (t) => {
    const op = await cp.createKey(['shell'], { name: 'operator 2' });
    const file = keygen('operator2');
    await cp.api('POST', `/api/keys/${op.id}/ssh-keys`, { body: { public_key: readFileSync(`${file}.pub`, 'utf8') } });
    const r = await ssh(file, 'gw-vm@127.0.0.1');
    t.equal(r.code, 1);
    t.match(r.err, /vmkit: agent_not_connected: /);
  });
}
