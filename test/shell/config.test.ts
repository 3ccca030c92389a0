import t from 'tap';
import { ConfigError, loadConfig, makeConfig } from '../../control-plane/src/config.ts';

t.test('the server command turns the SSH gateway on at 2222, on the HTTP host, unless told otherwise', async (t) => {
  t.same(loadConfig([], {}).sshGateway, { port: 2222, host: undefined, required: false });
  t.same(loadConfig(['--ssh-gateway-port', '2200', '--ssh-gateway-host', '0.0.0.0'], {}).sshGateway, { port: 2200, host: '0.0.0.0', required: true });
  t.equal(loadConfig([], { VMKIT_SSH_GATEWAY_PORT: '2022' }).sshGateway.port, 2022);
});

t.test('--ssh-gateway-port 0 turns the gateway off', async (t) => {
  t.equal(loadConfig(['--ssh-gateway-port', '0'], {}).sshGateway.port, null);
});

t.test('programmatic configs (tests, embedding) leave the gateway off unless asked', async (t) => {
  t.equal(makeConfig({}).sshGateway.port, null);
  t.equal(makeConfig({ sshGateway: { port: 0 } }).sshGateway.port, 0);
});

t.test('shell limits and recording settings come from flags or the environment', async (t) => {
  const c = loadConfig(['--shell-idle-timeout-s', '60', '--shell-max-session-s', '3600', '--shell-record-input', 'true'], { VMKIT_SHELL_REQUIRE_RECORDING: 'true' });
  t.match(c.shell, { idleTimeoutMs: 60_000, maxSessionMs: 3_600_000, recordInput: true, requireRecording: true });
  t.match(loadConfig([], {}).shell, { idleTimeoutMs: 20 * 60_000, recordInput: false, requireRecording: false });
});

t.test('bad shell and gateway settings are refused with a reason', async (t) => {
  t.throws(() => loadConfig(['--ssh-gateway-port', '70000'], {}), ConfigError);
  t.throws(() => loadConfig(['--shell-idle-timeout-s', '0'], {}), ConfigError);
  t.throws(() => loadConfig(['--shell-record-input', 'yes'], {}), { message: /true or false/ });
});
