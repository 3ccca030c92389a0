import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf, q } from '../api.ts';
import { Badge, ErrorText, Section, Time } from '../components.tsx';
import { href, routeQuery } from '../router.ts';
import type { Deploy, Environment, Repo } from '../types.ts';
import type { PageProps } from './index.ts';

/** How long one long-poll of a running deploy waits for news before asking again. */
const FOLLOW_WAIT_MS = 25_000;

function Timeline({ deploy }: { deploy: Deploy }) {
  if (deploy.steps.length === 0) return <p class="muted small">No steps yet.</p>;
  return (
    <ol class="timeline">
      {deploy.steps.map((s) => (
        <li key={s.seq} class={`step step-${s.state}`} data-step={s.name}>
          <span class="step-name">{s.name.replaceAll('_', ' ')}</span> <Badge value={s.state} />
          {s.attempts > 1 ? <span class="muted small"> (attempt {s.attempts})</span> : null}
          <div class="muted small">
            {s.started_at ? (
              <>
                started <Time at={s.started_at} />
              </>
            ) : null}
            {s.finished_at ? (
              <>
                , ended <Time at={s.finished_at} />
              </>
            ) : null}
          </div>
          {s.error_message ? (
            <p class="error">
              {s.error_message} {s.error_key ? <code>({s.error_key})</code> : null}
            </p>
          ) : null}
        </li>
      ))}
    </ol>
  );
}

/** One deploy; while it runs it is followed by long-polls that answer as soon as it changes. */
function DeployCard({ initial }: { initial: Deploy }) {
  const [deploy, setDeploy] = useState(initial);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setDeploy(initial), [initial]);
  useEffect(() => {
    if (deploy.status !== 'running') return;
    let stopped = false;
    api<Deploy>('GET', `/api/deploys/${encodeURIComponent(deploy.id)}${q({ wait_ms: FOLLOW_WAIT_MS, after: deploy.updated_at })}`)
      .then((d) => {
        if (!stopped) setDeploy(d);
      })
      .catch((err: unknown) => {
        if (!stopped) setError(messageOf(err));
      });
    return () => {
      stopped = true;
    };
  }, [deploy]);
  return (
    <section class="card" data-deploy={deploy.id}>
      <div class="card-head">
        <h2>
          {deploy.repo} → {deploy.dest}
        </h2>
        <Badge value={deploy.status} />
      </div>
      <p class="small muted">
        <Time at={deploy.created_at} />
        {deploy.sha ? (
          <>
            {' '}
            · commit <code>{deploy.sha.slice(0, 12)}</code>
          </>
        ) : null}
        {deploy.instance_id ? (
          <>
            {' '}
            · <a href={href('instances', deploy.instance_id)}>its instance</a>
          </>
        ) : null}
        {deploy.pr_url ? (
          <>
            {' '}
            · <a href={deploy.pr_url}>pull request</a>
          </>
        ) : null}
        {deploy.run_url ? (
          <>
            {' '}
            · <a href={deploy.run_url}>workflow run</a>
          </>
        ) : null}
        {deploy.app_url ? (
          <>
            {' '}
            · <a href={deploy.app_url}>{deploy.app_url}</a>
          </>
        ) : null}
      </p>
      {deploy.error_message ? (
        <p class="error">
          Failed{deploy.failed_step ? ` at ${deploy.failed_step.replaceAll('_', ' ')}` : ''}: {deploy.error_message}
        </p>
      ) : null}
      <Timeline deploy={deploy} />
      <ErrorText error={error} />
    </section>
  );
}

export function Deploys(_props: PageProps) {
  const query = routeQuery();
  const [repos, setRepos] = useState<Repo[]>([]);
  const [envs, setEnvs] = useState<Environment[]>([]);
  const [repo, setRepo] = useState(query.get('repo') ?? '');
  const [dest, setDest] = useState(query.get('dest') ?? '');
  const [deploys, setDeploys] = useState<Deploy[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [deployError, setDeployError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    api<{ items: Repo[] }>('GET', '/api/repos')
      .then((r) => setRepos(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, []);
  const repoRow = repos.find((r) => r.repo === repo);
  useEffect(() => {
    if (!repoRow) {
      setEnvs([]);
      return;
    }
    api<{ items: Environment[] }>('GET', `/api/repos/${encodeURIComponent(repoRow.id)}/environments`)
      .then((r) => setEnvs(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, [repoRow]);
  const reload = useCallback(() => {
    api<{ items: Deploy[] }>('GET', `/api/deploys${q({ repo, dest: repo ? dest : '' })}`)
      .then((r) => {
        setDeploys(r.items);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
  }, [repo, dest]);
  useEffect(reload, [reload]);

  return (
    <>
      <h1>Deploys</h1>
      <Section title="Which deploys">
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            if (!repo || !dest) {
              setDeployError('Pick a repository and an environment to deploy to.');
              return;
            }
            setBusy(true);
            setDeployError(null);
            api<Deploy>('POST', '/api/deploys', { repo, dest })
              .then(reload)
              .catch((err: unknown) => setDeployError(messageOf(err)))
              .finally(() => setBusy(false));
          }}
        >
          <label>
            Repository
            <select
              name="repo"
              value={repo}
              onChange={(e) => {
                setRepo(e.currentTarget.value);
                setDest('');
              }}
            >
              <option value="">all</option>
              {repos.map((r) => (
                // `selected` too: the options arrive after the value (a link's ?repo=), and a
                // select whose value named no option yet would stay on "all".
                <option key={r.id} value={r.repo} selected={r.repo === repo}>
                  {r.repo}
                </option>
              ))}
            </select>
          </label>
          <label>
            Environment
            <select name="dest" value={dest} disabled={!repo} onChange={(e) => setDest(e.currentTarget.value)}>
              <option value="">all</option>
              {envs.map((e) => (
                <option key={e.id} value={e.name} selected={e.name === dest}>
                  {e.name}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" class="primary" disabled={busy || !repo || !dest}>
            {busy ? 'Starting…' : 'Deploy now'}
          </button>
          <ErrorText error={deployError} />
        </form>
      </Section>
      <ErrorText error={error} />
      {deploys && deploys.length === 0 ? <p class="muted">No deploys {repo ? `of ${repo}${dest ? ` to ${dest}` : ''}` : 'yet'}.</p> : null}
      {(deploys ?? []).map((d) => (
        <DeployCard key={d.id} initial={d} />
      ))}
    </>
  );
}
