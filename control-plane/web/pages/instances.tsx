import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { Badge, ConfirmButton, ErrorText, Section, Time } from '../components.tsx';
import { useLive } from '../live.ts';
import { href } from '../router.ts';
import type { HardenEvent, Instance, LiveEvent } from '../types.ts';
import { HardenProgress } from './harden-progress.tsx';
import type { PageProps } from './index.ts';

/** Instances, kept current by the live feed; harden runs by instance id. */
export function useInstances() {
  const [items, setItems] = useState<Instance[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [runs, setRuns] = useState<Record<string, HardenEvent>>({});
  const reload = useCallback(() => {
    api<{ items: Instance[] }>('GET', '/api/instances')
      .then((r) => {
        setItems(r.items);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
  }, []);
  useEffect(reload, [reload]);
  const onEvent = useCallback((e: LiveEvent) => {
    if (e.type === 'instance') {
      setItems((list) => {
        if (!list) return list;
        const at = list.findIndex((i) => i.id === e.instance.id);
        if (at < 0) return [...list, e.instance];
        const next = [...list];
        next[at] = e.instance;
        return next;
      });
    } else {
      setRuns((r) => ({ ...r, [e.instance_id]: e }));
    }
  }, []);
  useLive(onEvent, reload);
  return { items, error, runs, setRuns, reload };
}

export function agentState(i: Instance): string {
  return i.agent?.state ?? 'no agent';
}

function CreateInstance({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState('');
  const [provider, setProvider] = useState('local');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="inline-form"
      onSubmit={(e) => {
        e.preventDefault();
        setBusy(true);
        setError(null);
        api('POST', '/api/instances', { name, provider })
          .then(() => {
            setName('');
            onCreated();
          })
          .catch((err: unknown) => setError(messageOf(err)))
          .finally(() => setBusy(false));
      }}
    >
      <label>
        Name
        <input name="name" value={name} required maxLength={64} pattern="[A-Za-z0-9][A-Za-z0-9._\-]*" placeholder="web-1" onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        Provider
        <select name="provider" value={provider} onChange={(e) => setProvider(e.currentTarget.value)}>
          <option value="local">local (a VM sandbox on this machine)</option>
          <option value="manual">manual (install the agent yourself)</option>
        </select>
      </label>
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Creating… (the VM boots)' : 'Create instance'}
      </button>
      <ErrorText error={error} />
    </form>
  );
}

export function startHarden(id: string, setRuns: (fn: (r: Record<string, HardenEvent>) => Record<string, HardenEvent>) => void, setError: (e: string | null) => void): void {
  setError(null);
  setRuns((r) => ({ ...r, [id]: { type: 'harden', instance_id: id, command_id: '', state: 'running', progress: [], result: null, error: null } }));
  api<{ status: string; command_id: string }>('POST', `/api/instances/${encodeURIComponent(id)}/harden`, { wait_ms: 0 }).catch((err: unknown) => {
    setRuns((r) => {
      const next = { ...r };
      delete next[id];
      return next;
    });
    setError(messageOf(err));
  });
}

function InstanceRow({ inst, run, setRuns, reload }: { inst: Instance; run: HardenEvent | undefined; setRuns: ReturnType<typeof useInstances>['setRuns']; reload: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const live = inst.status !== 'destroyed';
  return (
    <tr data-instance={inst.name}>
      <td>
        <a href={href('instances', inst.id)}>{inst.name}</a>
        <div class="muted small">{inst.provider}</div>
      </td>
      <td>
        <Badge value={inst.status} />
        {inst.status_reason ? <div class="muted small">{inst.status_reason}</div> : null}
      </td>
      <td class="agent-state">
        <Badge value={agentState(inst)} />
      </td>
      <td>{inst.hardened_at ? <Time at={inst.hardened_at} /> : <span class="muted">not yet</span>}</td>
      <td class="actions">
        {live ? (
          <>
            <button type="button" disabled={run?.state === 'running' || inst.agent?.state !== 'connected'} onClick={() => startHarden(inst.id, setRuns, setError)}>
              Harden
            </button>
            <ConfirmButton
              label="Destroy"
              confirmLabel={`Destroy ${inst.name}`}
              disabled={busy}
              onConfirm={() => {
                setBusy(true);
                setError(null);
                api('DELETE', `/api/instances/${encodeURIComponent(inst.id)}`)
                  .then(reload)
                  .catch((err: unknown) => setError(messageOf(err)))
                  .finally(() => setBusy(false));
              }}
            />
          </>
        ) : null}
        {run ? <HardenProgress run={run} /> : null}
        <ErrorText error={error} />
      </td>
    </tr>
  );
}

export function Instances(_props: PageProps) {
  const { items, error, runs, setRuns, reload } = useInstances();
  const [showDestroyed, setShowDestroyed] = useState(false);
  const shown = (items ?? []).filter((i) => showDestroyed || i.status !== 'destroyed');
  return (
    <>
      <h1>Instances</h1>
      <Section title="New instance">
        <CreateInstance onCreated={reload} />
      </Section>
      <Section
        title="All instances"
        actions={
          <label class="check">
            <input type="checkbox" checked={showDestroyed} onChange={(e) => setShowDestroyed(e.currentTarget.checked)} /> show destroyed
          </label>
        }
      >
        <ErrorText error={error} />
        {items === null && !error ? <p class="muted">Loading…</p> : null}
        {items !== null && shown.length === 0 ? <p class="muted">No instances yet: create one above.</p> : null}
        {shown.length > 0 ? (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Status</th>
                  <th scope="col">Agent</th>
                  <th scope="col">Hardened</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {shown.map((i) => (
                  <InstanceRow key={i.id} inst={i} run={runs[i.id]} setRuns={setRuns} reload={reload} />
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </Section>
    </>
  );
}
