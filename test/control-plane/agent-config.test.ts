// --agent-url / VMKIT_AGENT_URLS and --agent-ca-file / VMKIT_AGENT_CA_FILE: what the
// agents of provisioned VMs dial and trust, refused at start when an agent would refuse it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../control-plane/src/config.ts';
import { agentDestination } from '../../control-plane/src/services/agent-destination.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';

t.test('by default agents are sent to the public URL and trust the system roots', async (t) => {
  const config = loadConfig([], {});
  t.equal(config.agentUrls, undefined);
  t.equal(config.agentCa, undefined);
  t.same(agentDestination(config, 'https://cp.example.com'), { control_plane_url: 'https://cp.example.com' });
});

t.test('--agent-url repeats; VMKIT_AGENT_URLS is space-separated; flags win', async (t) => {
  const flags = loadConfig(['--agent-url', 'https://cp-a.example.com/', '--agent-url', 'https://cp-b.example.com:8443'], { VMKIT_AGENT_URLS: 'https://env.example.com' });
  t.same(flags.agentUrls, ['https://cp-a.example.com', 'https://cp-b.example.com:8443'], 'trailing slashes dropped, the flags win');
  t.same(agentDestination(flags, 'https://lb.example.com'), { control_plane_url: 'https://cp-a.example.com', more_control_plane_urls: ['https://cp-b.example.com:8443'] });
  const env = loadConfig([], { VMKIT_AGENT_URLS: ' https://cp-a.example.com\n  https://cp-b.example.com https://cp-a.example.com ' });
  t.same(env.agentUrls, ['https://cp-a.example.com', 'https://cp-b.example.com'], 'any whitespace separates; a repeat is dropped');
  t.same(loadConfig(['--agent-url', 'http://127.0.0.1:8080'], {}).agentUrls, ['http://127.0.0.1:8080'], 'plain http to loopback, as the agent allows');
  t.same(loadConfig([], { VMKIT_AGENT_URLS: '   ' }).agentUrls, undefined, 'a blank variable is unset');
});

t.test('an agent URL the agent would refuse is a ConfigError that says why', async (t) => {
  const cases: [string, RegExp][] = [
    ['cp.example.com', /is not an absolute URL; give the control plane's https:\/\/ base/],
    ['wss://cp.example.com/agent/v1/connect', /must be the control plane's https:\/\/ base .* not wss:\/\//],
    ['ftp://cp.example.com', /not ftp:\/\//],
    ['http://cp.example.com', /plain http:\/\/ is allowed only to loopback/],
    ['http://10.0.0.5:8080', /plain http:\/\/ is allowed only to loopback/],
    ["https://cp.example.com/'x'", /has a character no control-plane URL needs/],
    ['https://cp.example.com/?a=1', /has a character no control-plane URL needs/],
    ['https://user:pw@cp.example.com', /has a character no control-plane URL needs/],
  ];
  for (const [bad, message] of cases) {
    t.throws(() => loadConfig(['--agent-url', bad], {}), { name: 'ConfigError', message }, bad);
  }
  const nine = Array.from({ length: 9 }, (_, i) => `https://cp-${i}.example.com`).join(' ');
  t.throws(() => loadConfig([], { VMKIT_AGENT_URLS: nine }), { name: 'ConfigError', message: '9 agent URLs given; an agent dials at most 8' });
});

t.test('an agent CA file is read at start and checked like the agent checks ca_file', { skip: prerequisite(await opensslMissing()) }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-agent-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await makeTestCa(dir);
  const pem = readFileSync(ca.caFile, 'utf8');

  const config = loadConfig(['--agent-ca-file', ca.caFile], {});
  t.same(config.agentCa, { file: ca.caFile, pem }, 'the PEM as it is in the file');
  t.equal(agentDestination(config, 'https://cp.example.com').ca_pem, pem);
  t.same(loadConfig([], { VMKIT_AGENT_CA_FILE: 'ca.pem', INIT_CWD: dir }).agentCa?.file, ca.caFile, 'a relative path is resolved where the command was typed');
  const two = join(dir, 'two.pem');
  writeFileSync(two, pem + readFileSync(ca.certFile, 'utf8'));
  t.ok(loadConfig(['--agent-ca-file', two], {}).agentCa, 'a bundle of several certificates');

  const write = (name: string, content: string | Buffer): string => {
    const f = join(dir, name);
    writeFileSync(f, content);
    return f;
  };
  const cases: [string, RegExp][] = [
    [join(dir, 'missing.pem'), /cannot be read: ENOENT/],
    [dir, /cannot be read: EISDIR/],
    [write('text.pem', 'hello\n'), /holds no PEM certificate/],
    [write('broken.pem', '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n'), /certificate 1 of 1 is not a valid X\.509 certificate/],
    [write('with-key.pem', pem + readFileSync(ca.keyFile, 'utf8')), /holds a private key; give a file with the CA certificate\(s\) only/],
    [write('huge.pem', Buffer.concat([Buffer.from(pem), Buffer.alloc(1024 * 1024, 0x41)])), /is \d+ bytes; at most 1048576 \(1 MiB/],
  ];
  for (const [file, message] of cases) {
    t.throws(() => loadConfig(['--agent-ca-file', file], {}), { name: 'ConfigError', message }, file);
  }
});
