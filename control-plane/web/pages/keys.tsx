import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { Badge, ConfirmButton, CopyButton, ErrorText, Section, Time } from '../components.tsx';
import type { ApiKey } from '../types.ts';
import type { PageProps } from './index.ts';
import { SCOPES } from '../types.ts';

interface CreatedKey extends ApiKey {
  secret: string;
}

const EXPIRIES: { label: string; days: number | null }[] = [
  { label: 'never', days: null },
  { label: '7 days', days: 7 },
  { label: '30 days', days: 30 },
  { label: '90 days', days: 90 },
  { label: '1 year', days: 365 },
];

export function mcpSnippets(secret: string): { json: string; claude: string } {
  const url = `${location.origin}/mcp`;
  const json = JSON.stringify({ mcpServers: { vmkit: { type: 'http', url, headers: { Authorization: `Bearer ${secret}` } } } }, null, 2);
  return { json, claude: `claude mcp add --transport http vmkit ${url} --header "Authorization: Bearer ${secret}"` };
}

/** The secret of a new key, shown once, with what to paste where. */
function NewSecret({ created, onDone }: { created: CreatedKey; onDone: () => void }) {
  const { json, claude } = mcpSnippets(created.secret);
  return (
    <div class="secret" role="region" aria-label="New API key">
      <p>
        <strong>Copy the key now:</strong> it is shown only this once (the server keeps only its hash).
      </p>
      <div class="copy-row">
        <code class="secret-value" data-secret>
          {created.secret}
        </code>
        <CopyButton text={created.secret} label="Copy key" />
      </div>
      <h3>
        Claude Code: <code>.mcp.json</code> in your project
      </h3>
      <div class="copy-row">
        <pre data-snippet="mcp-json">{json}</pre>
        <CopyButton text={json} />
      </div>
      <h3>or on the command line</h3>
      <div class="copy-row">
        <pre data-snippet="claude-mcp-add">{claude}</pre>
        <CopyButton text={claude} />
      </div>
      <button type="button" onClick={onDone}>
        Done, hide the key
      </button>
    </div>
  );
}

function CreateKey({ onCreated }: { onCreated: (k: CreatedKey) => void }) {
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<string[]>(['instances:read']);
  const [days, setDays] = useState<number | null>(90);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        if (scopes.length === 0) {
          setError('Pick at least one scope.');
          return;
        }
        setBusy(true);
        setError(null);
        const expires_at = days === null ? undefined : new Date(Date.now() + days * 86_400_000).toISOString();
        api<CreatedKey>('POST', '/api/keys', { name, scopes, ...(expires_at ? { expires_at } : {}) })
          .then((k) => {
            setName('');
            onCreated(k);
          })
          .catch((err: unknown) => setError(messageOf(err)))
          .finally(() => setBusy(false));
      }}
    >
      <label>
        Name
        <input name="key-name" value={name} required maxLength={100} placeholder="claude on my laptop" onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <fieldset>
        <legend>Scopes</legend>
        <div class="scopes">
          {SCOPES.map((s) => (
            <label key={s} class="check">
              <input
                type="checkbox"
                name="scope"
                value={s}
                checked={scopes.includes(s)}
                onChange={(e) => setScopes((cur) => (e.currentTarget.checked ? [...cur, s] : cur.filter((x) => x !== s)))}
              />{' '}
              {s}
            </label>
          ))}
        </div>
      </fieldset>
      <label>
        Expires
        <select name="expiry" value={days === null ? 'never' : String(days)} onChange={(e) => setDays(e.currentTarget.value === 'never' ? null : Number(e.currentTarget.value))}>
          {EXPIRIES.map((x) => (
            <option key={x.label} value={x.days === null ? 'never' : String(x.days)}>
              {x.label}
            </option>
          ))}
        </select>
      </label>
      <button type="submit" class="primary" disabled={busy}>
        Create key
      </button>
      <ErrorText error={error} />
    </form>
  );
}

function KeyRow({ k, self, onRevoked }: { k: ApiKey; self: boolean; onRevoked: () => void }) {
  const [error, setError] = useState<string | null>(null);
  return (
    <tr data-key={k.name}>
      <td>
        {k.name}
        {self ? <span class="muted small"> (this session)</span> : null}
        <div class="muted small">
          <code>{k.prefix}…</code>
        </div>
      </td>
      <td class="small">{k.scopes.join(', ')}</td>
      <td>
        <Time at={k.created_at} />
      </td>
      <td>
        <Time at={k.expires_at} />
      </td>
      <td>
        <Time at={k.last_used_at} />
      </td>
      <td>
        {k.revoked_at ? (
          <Badge value="revoked" />
        ) : (
          <ConfirmButton
            label="Revoke"
            confirmLabel={self ? 'Revoke (ends this session)' : `Revoke ${k.name}`}
            onConfirm={() => {
              setError(null);
              api('DELETE', `/api/keys/${encodeURIComponent(k.id)}`)
                .then(onRevoked)
                .catch((err: unknown) => setError(messageOf(err)));
            }}
          />
        )}
        <ErrorText error={error} />
      </td>
    </tr>
  );
}

export function ApiKeys({ session }: PageProps) {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<CreatedKey | null>(null);
  const reload = useCallback(() => {
    api<{ items: ApiKey[] }>('GET', '/api/keys')
      .then((r) => {
        setKeys(r.items);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
  }, []);
  useEffect(reload, [reload]);
  return (
    <>
      <Section title="New API key">
        {created ? <NewSecret created={created} onDone={() => setCreated(null)} /> : <CreateKey onCreated={(k) => { setCreated(k); reload(); }} />}
      </Section>
      <Section title="API keys">
        <ErrorText error={error} />
        {keys ? (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Scopes</th>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Last used</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {keys.map((k) => (
                  <KeyRow key={k.id} k={k} self={k.id === session.key.id} onRevoked={reload} />
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </Section>
    </>
  );
}
