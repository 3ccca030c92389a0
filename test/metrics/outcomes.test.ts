// The bounded outcome labels: whatever an agent or a REST answer says, the label is one
// of a fixed set.
import t from 'tap';
import { AgentCommandError, AgentNotConnectedError, CommandAbortedError, CommandBusError, CommandTimeoutError } from '../../control-plane/src/hub/errors.ts';
import { commandOutcomeOf } from '../../control-plane/src/metrics/command-bus.ts';
import { toolOutcomeOf } from '../../control-plane/src/metrics/mcp-tools.ts';
import { AUTH_FAILED_TEXT, errorResult, okResult } from '../../control-plane/src/mcp/tool.ts';

t.test('a command’s outcome label follows the error it ended with', async (t) => {
  t.equal(commandOutcomeOf(new AgentCommandError('cmd_1', 'refused', { key: 'bad_signature', message: 'no' })), 'refused');
  t.equal(commandOutcomeOf(new AgentCommandError('cmd_1', 'failed', { key: 'lockout_risk', message: 'no' })), 'failed');
  t.equal(commandOutcomeOf(new CommandTimeoutError('cmd_1', 'expired', 10)), 'expired');
  t.equal(commandOutcomeOf(new CommandTimeoutError('cmd_1', 'timed_out', 10)), 'timed_out');
  t.equal(commandOutcomeOf(new CommandAbortedError('cmd_1')), 'aborted');
  t.equal(commandOutcomeOf(new AgentNotConnectedError('agt_1')), 'not_connected');
  t.equal(commandOutcomeOf(new CommandBusError('internal', 'the command bus is closed')), 'error');
  t.equal(commandOutcomeOf(new Error('disk full')), 'error');
});

t.test('a tool’s outcome label is ok or a registered error key', async (t) => {
  t.equal(toolOutcomeOf(okResult({ items: [] })), 'ok');
  t.equal(toolOutcomeOf(errorResult({ status: 401, body: { error: 'unauthorized', message: 'x' }, headers: {} })), 'unauthorized');
  t.equal(toolOutcomeOf({ isError: true, content: [{ type: 'text', text: AUTH_FAILED_TEXT }] }), 'unauthorized');
  t.equal(toolOutcomeOf(errorResult({ status: 404, body: { error: 'repo_not_found', message: 'x' }, headers: {} })), 'repo_not_found');
  t.equal(toolOutcomeOf({ isError: true, content: [{ type: 'text', text: '{"error":"made_up_key_123","message":"x"}' }] }), 'error', 'an unregistered key does not become a label');
  t.equal(toolOutcomeOf({ isError: true, content: [{ type: 'text', text: 'not json' }] }), 'error');
  t.equal(toolOutcomeOf({ isError: true, content: [] }), 'error');
});
