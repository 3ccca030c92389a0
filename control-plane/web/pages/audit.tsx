import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf, q } from '../api.ts';
import { ErrorText, Section, Time } from '../components.tsx';
import type { ApiKey, AuditEntry } from '../types.ts';
import type { PageProps } from './index.ts';

interface Filters {
  key_id: string;
  action: string;
  channel: string;
  since: string;
  until: string;
}

const EMPTY: Filters = { key_id: '', action: '', channel: '', since: '', until: '' };
const PAGE_SIZE = 25;

/** datetime-local gives local wall time without a zone; the API wants ISO 8601 with one. */
function isoOf(local: string): string | undefined {
  if (local === '') return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export function AuditLog(_props: PageProps) {
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  /** Cursors of the pages before this one; the last is this page's. */
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<{ items: AuditEntry[]; next_cursor: string | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [keys, setKeys] = useState<ApiKey[]>([]);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    api<{ items: ApiKey[] }>('GET', '/api/keys')
      .then((r) => setKeys(r.items))
      .catch(() => setKeys([]));
  }, []);

  const load = useCallback(() => {
    const path = `/api/audit${q({
      key_id: filters.key_id,
      action: filters.action.trim(),
      channel: filters.channel,
      since: isoOf(filters.since),
      until: isoOf(filters.until),
      cursor,
      limit: PAGE_SIZE,
    })}`;
    api<{ items: AuditEntry[]; next_cursor: string | null }>('GET', path)
      .then((p) => {
        setPage(p);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
  }, [filters, cursor]);
  useEffect(load, [load]);

  const keyName = (id: string | null) => (id === null ? '—' : (keys.find((k) => k.id === id)?.name ?? id));
  const field = (name: keyof Filters) => ({
    name,
    value: draft[name],
    onInput: (e: { currentTarget: { value: string } }) => setDraft({ ...draft, [name]: e.currentTarget.value }),
  });

  return (
    <>
      <h1>Audit log</h1>
      <Section title="Filter">
        <form
          class="inline-form filters"
          onSubmit={(e) => {
            e.preventDefault();
            setFilters(draft);
            setCursors([undefined]);
          }}
        >
          <label>
            Actor (API key)
            <select {...field('key_id')} onChange={(e) => setDraft({ ...draft, key_id: e.currentTarget.value })}>
              <option value="">anyone</option>
              {keys.map((k) => (
                <option key={k.id} value={k.id}>
                  {k.name} ({k.prefix}…)
                </option>
              ))}
            </select>
          </label>
          <label>
            Action
            <input {...field('action')} placeholder="instances.harden" />
          </label>
          <label>
            Channel
            <select {...field('channel')} onChange={(e) => setDraft({ ...draft, channel: e.currentTarget.value })}>
              <option value="">any</option>
              <option value="rest">rest</option>
              <option value="mcp">mcp</option>
              <option value="dashboard">dashboard</option>
              <option value="shell">shell</option>
            </select>
          </label>
          <label>
            From
            <input type="datetime-local" {...field('since')} />
          </label>
          <label>
            To
            <input type="datetime-local" {...field('until')} />
          </label>
          <button type="submit" class="primary">
            Apply
          </button>
          <button
            type="button"
            onClick={() => {
              setDraft(EMPTY);
              setFilters(EMPTY);
              setCursors([undefined]);
            }}
          >
            Clear
          </button>
        </form>
      </Section>
      <Section title="Entries, newest first">
        <ErrorText error={error} />
        {page && page.items.length === 0 ? <p class="muted">No entries match.</p> : null}
        {page && page.items.length > 0 ? (
          <div class="table-wrap">
            <table class="audit">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Channel</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Status</th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((a) => (
                  <tr key={a.id} data-audit={a.action}>
                    <td>
                      <Time at={a.at} />
                    </td>
                    <td>{keyName(a.key_id)}</td>
                    <td>{a.channel}</td>
                    <td>
                      {a.action}
                      {a.tool ? <div class="muted small">tool {a.tool}</div> : null}
                    </td>
                    <td class="small">{a.target_ids ? Object.values(a.target_ids).join(', ') : '—'}</td>
                    <td class={a.status >= 400 ? 'error-inline' : ''}>
                      {a.status}
                      {a.error_key ? ` ${a.error_key}` : ''}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
        <nav class="pager" aria-label="Pages">
          <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
            ← Newer
          </button>
          <span class="muted">Page {cursors.length}</span>
          <button type="button" disabled={!page?.next_cursor} onClick={() => page?.next_cursor && setCursors((c) => [...c, page.next_cursor ?? undefined])}>
            Older →
          </button>
        </nav>
      </Section>
    </>
  );
}
