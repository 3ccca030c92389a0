import t from 'tap';
import { MAX_NOTIFY_PAYLOAD_BYTES, channelOf, encodeProgressPayload, listenerApplicationName, parseNotification } from '../../control-plane/src/db/pg-command-router.ts';

t.test('progress payloads stay under the NOTIFY limit: detail, then message, give way', async (t) => {
  const small = encodeProgressPayload('cmd_1', { command_id: 'cmd_1', seq: 1, step: 'sshd', state: 'started', message: 'ok', detail: { a: 1 } });
  t.same(parseNotification(small), { k: 'p', id: 'cmd_1', p: { command_id: 'cmd_1', seq: 1, step: 'sshd', state: 'started', message: 'ok', detail: { a: 1 } } });
  const bigDetail = encodeProgressPayload('cmd_2', { command_id: 'cmd_2', seq: 2, step: 's', state: 'done', message: 'm', detail: { x: 'y'.repeat(10_000) } });
  t.ok(Buffer.byteLength(bigDetail) <= MAX_NOTIFY_PAYLOAD_BYTES);
  t.same(parseNotification(bigDetail), { k: 'p', id: 'cmd_2', p: { command_id: 'cmd_2', seq: 2, step: 's', state: 'done', message: 'm' } }, 'the detail went');
  const bigMessage = encodeProgressPayload('cmd_3', { command_id: 'cmd_3', seq: 3, step: 's', state: 'done', message: 'z'.repeat(10_000) });
  t.ok(Buffer.byteLength(bigMessage) <= MAX_NOTIFY_PAYLOAD_BYTES);
  t.same(parseNotification(bigMessage), { k: 'p', id: 'cmd_3', p: { command_id: 'cmd_3', seq: 3, step: 's', state: 'done' } }, 'the message went too');
});

t.test('notifications that are not ours are refused', async (t) => {
  t.same(parseNotification('{"k":"c","id":"cmd_1"}'), { k: 'c', id: 'cmd_1' });
  t.same(parseNotification('{"k":"r","id":"cmd_1"}'), { k: 'r', id: 'cmd_1' });
  for (const bad of ['', 'not json', 'null', '3', '{"k":"c"}', '{"k":"x","id":"a"}', '{"k":"p","id":"a"}', '{"k":"p","id":"a","p":null}']) {
    t.equal(parseNotification(bad), undefined, JSON.stringify(bad));
  }
});

t.test('channel and application names fit PostgreSQL identifiers whatever the node id', async (t) => {
  const long = `n${'x'.repeat(62)}`;
  t.ok(channelOf(long).length <= 63);
  t.not(channelOf('node-a'), channelOf('node-b'));
  t.equal(channelOf('node-a'), channelOf('node-a'));
  t.match(channelOf('node-a'), /^[a-z0-9_]+$/);
  t.ok(listenerApplicationName(long).length <= 63);
});
