import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { ConfirmButton, ErrorText, Section, Time } from '../components.tsx';
import { href } from '../router.ts';
import type { Environment, Repo, Scan } from '../types.ts';
import type { PageProps } from './index.ts';

function yesNo(v: boolean | null): string {
  return v === null ? '—' : v ? 'yes' : 'no';
}

/** A scan's fields, how sure it is, and the files that decided. */
export function ScanResult({ scan }: { scan: Scan }) {
  if (scan.status !== 'succeeded') {
    return (
      <p class="error" role="alert">
        Scan {scan.status}
        {scan.error_key ? `: ${scan.error_key}` : ''}
      </p>
    );
  }
  const fields: [string, string][] = [
    ['Language', scan.language ?? '—'],
    ['Framework', scan.framework ?? '—'],
    ['Buildpack', scan.buildpack ?? '—'],
    ['Procfile', yesNo(scan.procfile_detected)],
    ['Dockerfile', yesNo(scan.dockerfile_detected)],
    ['App root', scan.root ?? '—'],
    ['Confidence', scan.confidence === null ? '—' : `${Math.round(scan.confidence * 100)} %`],
    ['Classifier', scan.classifier ?? '—'],
    ['Commit', scan.sha ? scan.sha.slice(0, 12) : '—'],
  ];
  return (
    <div class="scan" data-scan={scan.scan_id}>
      <dl class="facts">
        {fields.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd data-field={k}>{v}</dd>
          </div>
        ))}
      </dl>
      {scan.reason ? <p class="small">{scan.reason}</p> : null}
      {scan.buildpack_note ? <p class="small muted">{scan.buildpack_note}</p> : null}
      {scan.evidence && scan.evidence.length > 0 ? (
        <>
          <h3>Evidence</h3>
          <ul class="evidence">
            {scan.evidence.map((e) => (
              <li key={e.file + e.reason}>
                <code>{e.file}</code>: {e.reason}
              </li>
            ))}
          </ul>
        </>
      ) : null}
      <p class="muted small">
        Scanned <Time at={scan.created_at} />
      </p>
    </div>
  );
}

function Environments({ repo }: { repo: Repo }) {
  const [items, setItems] = useState<Environment[] | null>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const base = `/api/repos/${encodeURIComponent(repo.id)}/environments`;
  const reload = useCallback(() => {
    api<{ items: Environment[] }>('GET', base)
      .then((r) => setItems(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, [base]);
  useEffect(reload, [reload]);
  return (
    <div class="environments">
      <h3>Environments</h3>
      {items && items.length === 0 ? <p class="muted small">None yet: deploys go to an environment such as staging or production.</p> : null}
      <ul class="env-list">
        {(items ?? []).map((e) => (
          <li key={e.id} data-environment={e.name}>
            <a href={`${href('deploys')}?repo=${encodeURIComponent(repo.repo)}&dest=${encodeURIComponent(e.name)}`}>{e.name}</a>{' '}
            <ConfirmButton
              label="Delete"
              confirmLabel={`Delete ${e.name} and its deploy history`}
              onConfirm={() => {
                setError(null);
                api('DELETE', `${base}/${encodeURIComponent(e.id)}`)
                  .then(reload)
                  .catch((err: unknown) => setError(messageOf(err)));
              }}
            />
          </li>
        ))}
      </ul>
      <form
        class="inline-form"
        onSubmit={(ev) => {
          ev.preventDefault();
          setError(null);
          api('POST', base, { name })
            .then(() => {
              setName('');
              reload();
            })
            .catch((err: unknown) => setError(messageOf(err)));
        }}
      >
        <label>
          New environment of {repo.repo}
          <input name="environment" value={name} required maxLength={32} placeholder="staging" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <button type="submit">Add environment</button>
        <ErrorText error={error} />
      </form>
    </div>
  );
}

function RepoCard({ repo }: { repo: Repo }) {
  const [scan, setScan] = useState<Scan | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    api<{ items: Scan[] }>('GET', `/api/repos/${encodeURIComponent(repo.id)}/scans`)
      .then((r) => setScan(r.items[0] ?? null))
      .catch((err: unknown) => setError(messageOf(err)));
  }, [repo.id]);
  return (
    <section class="card" data-repo={repo.repo}>
      <div class="card-head">
        <h2>{repo.repo}</h2>
        <button
          type="button"
          disabled={busy}
          onClick={() => {
            setBusy(true);
            setError(null);
            api<Scan>('POST', '/api/scans', { repo: repo.repo })
              .then(setScan)
              .catch((err: unknown) => setError(messageOf(err)))
              .finally(() => setBusy(false));
          }}
        >
          {busy ? 'Scanning…' : scan ? 'Scan again' : 'Scan'}
        </button>
      </div>
      <ErrorText error={error} />
      {scan ? <ScanResult scan={scan} /> : <p class="muted small">Not scanned yet.</p>}
      <Environments repo={repo} />
    </section>
  );
}

export function Repos(_props: PageProps) {
  const [repos, setRepos] = useState<Repo[] | null>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [connectError, setConnectError] = useState<string | null>(null);
  const reload = useCallback(() => {
    api<{ items: Repo[] }>('GET', '/api/repos')
      .then((r) => setRepos(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, []);
  useEffect(reload, [reload]);
  return (
    <>
      <h1>Repositories</h1>
      <Section title="Connect a repository">
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            setConnectError(null);
            api('POST', '/api/repos', { repo: name.trim() })
              .then(() => {
                setName('');
                reload();
              })
              .catch((err: unknown) => setConnectError(messageOf(err)));
          }}
        >
          <label>
            GitHub repository
            <input name="repo" value={name} required placeholder="owner/name" onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <button type="submit" class="primary">
            Connect
          </button>
          <ErrorText error={connectError} />
        </form>
      </Section>
      <ErrorText error={error} />
      {repos && repos.length === 0 ? <p class="muted">No repositories connected yet.</p> : null}
      {(repos ?? []).map((r) => (
        <RepoCard key={r.id} repo={r} />
      ))}
      {repos && repos.length > 0 ? (
        <p class="muted small">
          Deploys of these repositories are under <a href={href('deploys')}>Deploys</a>; an environment's name links to its deploys.
        </p>
      ) : null}
    </>
  );
}
