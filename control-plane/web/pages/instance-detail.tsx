import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { Badge, ErrorText, Section, Time } from '../components.tsx';
import { useLive } from '../live.ts';
import { href } from '../router.ts';
import type { CommandEntry, HardenEvent, Instance, LiveEvent } from '../types.ts';
import { hasScope } from '../types.ts';
import { BrowserTerminal, Recordings } from './terminal.tsx';
import { HardenProgress } from './harden-progress.tsx';
import type { PageProps } from './index.ts';
import { agentState, startHarden } from './instances.tsx';

function Facts({ inst }: { inst: Instance }) {
  const a = inst.agent;
  const rows: [string, ComponentChildren][] = [
    ['Status', <Badge key="s" value={inst.status} />],
    ['Agent', <Badge key="a" value={agentState(inst)} />],
    ['OS', a?.os ?? '—'],
    ['Agent version', a?.agent_version ?? '—'],
    ['Hostname', a?.hostname ?? '—'],
    ['Last seen', <Time key="l" at={a?.last_seen} />],
    ['Connected since', <Time key="c" at={a?.state === 'connected' ? a.connected_at : null} />],
    ['Hardened', <Time key="h" at={inst.hardened_at} />],
    ['SSH', inst.ssh ? `${inst.ssh.host}:${inst.ssh.port}` : '—'],
    ['Provider', inst.provider],
    ['Created', <Time key="cr" at={inst.created_at} />],
    ['Id', <code key="id">{inst.id}</code>],
  ];
  return (
    <dl class="facts">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd data-fact={k}>{v}</dd>
        </div>
      ))}
      {inst.status_reason ? (
        <div>
          <dt>Why</dt>
          <dd>{inst.status_reason}</dd>
        </div>
      ) : null}
    </dl>
  );
}

function Commands({ items }: { items: CommandEntry[] }) {
  if (items.length === 0) return <p class="muted">No commands were sent to this instance's agent yet.</p>;
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">Command</th>
            <th scope="col">State</th>
            <th scope="col">Sent</th>
            <th scope="col">Result</th>
          </tr>
        </thead>
        <tbody>
          {items.map((c) => (
            <tr key={c.id}>
              <td>
                {c.type}
                <div class="muted small">
                  <code>{c.id}</code>
                </div>
              </td>
              <td>
                <Badge value={c.state} />
              </td>
              <td>
                <Time at={c.created_at} />
              </td>
              <td>
                {c.error_key ? <span class="error-inline">{c.error_key}</span> : null}
                {c.result ? (
                  <details>
                    <summary>{typeof c.result.status === 'string' ? c.result.status : 'result'}</summary>
                    <pre>{JSON.stringify(c.result, null, 2)}</pre>
                  </details>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Shell({ inst, session }: { inst: Instance; session: PageProps['session'] }) {
  const [open, setOpen] = useState(false);
  const [refresh, setRefresh] = useState(0);
  const ended = useCallback(() => setRefresh((n) => n + 1), []);
  if (!hasScope(session.key.scopes, 'shell')) {
    return <p class="muted small">The terminal and the recordings need a key with the shell scope.</p>;
  }
  const connected = inst.agent?.state === 'connected' && inst.status !== 'destroyed';
  return (
    <>
      {open ? (
        <>
          <BrowserTerminal instanceId={inst.id} onEnded={ended} />
          <button type="button" onClick={() => setOpen(false)}>
            Close terminal
          </button>
        </>
      ) : (
        <button type="button" disabled={!connected} onClick={() => setOpen(true)}>
          Open terminal
        </button>
      )}
      {!connected ? <p class="muted small">The terminal opens once the instance’s agent is connected.</p> : null}
      <h3>Recorded sessions</h3>
      <Recordings instanceId={inst.id} refresh={refresh} />
    </>
  );
}

export function InstanceDetail({ route, session }: PageProps) {
  const id = route[1] ?? '';
  const [inst, setInst] = useState<Instance | null>(null);
  const [commands, setCommands] = useState<CommandEntry[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [runs, setRuns] = useState<Record<string, HardenEvent>>({});
  const reload = useCallback(() => {
    api<Instance>('GET', `/api/instances/${encodeURIComponent(id)}`)
      .then((i) => {
        setInst(i);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
    api<{ items: CommandEntry[] }>('GET', `/api/instances/${encodeURIComponent(id)}/commands`)
      .then((r) => setCommands(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, [id]);
  useEffect(reload, [reload]);
  const onEvent = useCallback(
    (e: LiveEvent) => {
      if (e.type === 'instance' && e.instance.id === id) setInst(e.instance);
      if (e.type === 'harden' && e.instance_id === id) {
        setRuns((r) => ({ ...r, [id]: e }));
        if (e.state !== 'running') reload();
      }
    },
    [id, reload],
  );
  useLive(onEvent, reload);
  const run = runs[id];
  return (
    <>
      <p>
        <a href={href('instances')}>← Instances</a>
      </p>
      <h1>{inst ? inst.name : 'Instance'}</h1>
      <ErrorText error={error} />
      {inst ? (
        <>
          <Section
            title="Facts"
            actions={
              inst.status !== 'destroyed' ? (
                <button type="button" disabled={run?.state === 'running' || inst.agent?.state !== 'connected'} onClick={() => startHarden(inst.id, setRuns, setActionError)}>
                  Harden
                </button>
              ) : null
            }
          >
            <Facts inst={inst} />
            {run ? <HardenProgress run={run} /> : null}
            <ErrorText error={actionError} />
          </Section>
          <Section title="Shell">
            <Shell inst={inst} session={session} />
          </Section>
          <Section title="Commands">
            <Commands items={commands} />
          </Section>
        </>
      ) : null}
    </>
  );
}
