import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { ErrorText, Section, Time } from '../components.tsx';
import type { PageProps } from './index.ts';

type Kind = 'compute' | 'dns' | 'github';

interface ProviderSettings {
  kind: Kind;
  provider: string | null;
  source: 'workspace' | 'default';
  settings: Record<string, unknown>;
  secret_fingerprint: string | null;
  secret_set_at: string | null;
  updated_at: string | null;
}

interface FieldSpec {
  name: string;
  label: string;
  secret?: boolean;
  multiline?: boolean;
  placeholder?: string;
  /** Only for these providers. */
  for?: string[];
}

const KINDS: { kind: Kind; title: string; providers: string[]; fields: FieldSpec[]; about: string }[] = [
  {
    kind: 'compute',
    title: 'Compute',
    about: 'Where deploys make VMs.',
    providers: ['local', 'hetzner'],
    fields: [
      { name: 'token', label: 'Hetzner Cloud API token', secret: true, for: ['hetzner'] },
      { name: 'location', label: 'Location', placeholder: 'fsn1', for: ['hetzner'] },
      { name: 'server_type', label: 'Server type', placeholder: 'cx22', for: ['hetzner'] },
      { name: 'image', label: 'Image', placeholder: 'debian-12', for: ['hetzner'] },
    ],
  },
  {
    kind: 'dns',
    title: 'DNS',
    about: 'Where deploys register host names.',
    providers: ['local', 'cloudflare'],
    fields: [
      { name: 'zone', label: 'Zone', placeholder: 'example.com' },
      { name: 'token', label: 'Cloudflare API token', secret: true, for: ['cloudflare'] },
      { name: 'zone_id', label: 'Zone id', for: ['cloudflare'] },
    ],
  },
  {
    kind: 'github',
    title: 'GitHub',
    about: 'How scans and deploys reach repositories: a GitHub App (id and private key) or a token.',
    providers: ['github'],
    fields: [
      { name: 'app_id', label: 'GitHub App id' },
      { name: 'private_key', label: 'App private key (PEM)', secret: true, multiline: true },
      { name: 'token', label: 'or a token (fine-grained PAT)', secret: true },
      { name: 'api_url', label: 'API URL', placeholder: 'https://api.github.com' },
    ],
  },
];

function ProviderForm({ spec, current, onSaved }: { spec: (typeof KINDS)[number]; current: ProviderSettings; onSaved: () => void }) {
  const [provider, setProvider] = useState(current.provider ?? spec.providers[0] ?? '');
  const [values, setValues] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const fields = spec.fields.filter((f) => !f.for || f.for.includes(provider));
  return (
    <form
      data-integration={spec.kind}
      onSubmit={(e) => {
        e.preventDefault();
        setError(null);
        setSaved(null);
        const body: Record<string, unknown> = { provider };
        for (const f of fields) {
          const v = values[f.name]?.trim();
          if (v) body[f.name] = v;
        }
        api('PUT', `/api/workspace/${spec.kind}`, body)
          .then(() => {
            setValues({});
            setSaved('Saved.');
            onSaved();
          })
          .catch((err: unknown) => setError(messageOf(err)));
      }}
    >
      <p class="small">
        Now: <strong>{current.provider ?? 'none'}</strong> ({current.source === 'workspace' ? 'set for this workspace' : "the control plane's default"})
        {current.secret_fingerprint ? (
          <>
            {' '}
            · secret <code>{current.secret_fingerprint.slice(0, 16)}…</code> set <Time at={current.secret_set_at} />
          </>
        ) : null}
      </p>
      {Object.keys(current.settings).length > 0 ? (
        <p class="small muted">
          {Object.entries(current.settings)
            .map(([k, v]) => `${k}: ${String(v)}`)
            .join(' · ')}
        </p>
      ) : null}
      {spec.providers.length > 1 ? (
        <label>
          Provider
          <select name="provider" value={provider} onChange={(e) => setProvider(e.currentTarget.value)}>
            {spec.providers.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
      ) : null}
      {fields.map((f) => (
        <label key={f.name}>
          {f.label}
          {f.multiline ? (
            <textarea name={f.name} rows={3} value={values[f.name] ?? ''} onInput={(e) => setValues({ ...values, [f.name]: e.currentTarget.value })} />
          ) : f.secret ? (
            <input
              name={f.name}
              type="password"
              autoComplete="off"
              placeholder={current.secret_fingerprint ? 'leave empty to keep the stored one' : ''}
              value={values[f.name] ?? ''}
              onInput={(e) => setValues({ ...values, [f.name]: e.currentTarget.value })}
            />
          ) : (
            <input name={f.name} type="text" placeholder={f.placeholder ?? ''} value={values[f.name] ?? ''} onInput={(e) => setValues({ ...values, [f.name]: e.currentTarget.value })} />
          )}
        </label>
      ))}
      <div class="row">
        <button type="submit" class="primary">
          Save {spec.title}
        </button>
        {current.source === 'workspace' ? (
          <button
            type="button"
            onClick={() => {
              setError(null);
              api('DELETE', `/api/workspace/${spec.kind}`)
                .then(onSaved)
                .catch((err: unknown) => setError(messageOf(err)));
            }}
          >
            Back to the default
          </button>
        ) : null}
      </div>
      {saved ? (
        <p class="ok" role="status">
          {saved}
        </p>
      ) : null}
      <ErrorText error={error} />
    </form>
  );
}

/** Compute, DNS and GitHub for deploys and scans; secrets go in, only fingerprints come out. */
export function Integrations(_props: PageProps) {
  const [current, setCurrent] = useState<Record<Kind, ProviderSettings> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const reload = useCallback(() => {
    api<Record<Kind, ProviderSettings>>('GET', '/api/workspace/providers')
      .then(setCurrent)
      .catch((err: unknown) => setError(messageOf(err)));
  }, []);
  useEffect(reload, [reload]);
  return (
    <>
      <ErrorText error={error} />
      {current
        ? KINDS.map((spec) => (
            <Section key={spec.kind} title={spec.title}>
              <p class="muted small">{spec.about} Credentials are checked with the provider, then stored encrypted; they are never shown again.</p>
              <ProviderForm spec={spec} current={current[spec.kind]} onSaved={reload} />
            </Section>
          ))
        : null}
    </>
  );
}
