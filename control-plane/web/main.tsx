import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import './styles.css';
import { api, messageOf, setCsrfToken, whenSessionEnds } from './api.ts';
import { ErrorText } from './components.tsx';
import { startLive, stopLive } from './live.ts';
import { href, useRoute } from './router.ts';
import type { Session } from './types.ts';
import { SignIn } from './pages/signin.tsx';
import { PAGES, pageFor } from './pages/index.ts';

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [ended, setEnded] = useState<string | null>(null);
  const route = useRoute();

  const signedIn = useCallback((s: Session) => {
    setCsrfToken(s.session?.csrf_token ?? null);
    setEnded(null);
    setSession(s);
  }, []);

  useEffect(() => {
    whenSessionEnds((message) => {
      stopLive();
      setCsrfToken(null);
      setSession(null);
      setEnded(message);
    });
    api<Session>('GET', '/api/session')
      .then(signedIn)
      .catch(() => setSession(null));
  }, [signedIn]);

  useEffect(() => {
    if (session) startLive();
    return stopLive;
  }, [session]);

  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) return <SignIn ended={ended} onSignedIn={signedIn} />;

  const page = pageFor(route);
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href={href('instances')}>
          VMKit
        </a>
        <nav aria-label="Main">
          {PAGES.filter((p) => p.nav).map((p) => (
            <a key={p.path} href={href(p.path)} aria-current={page.path === p.path ? 'page' : undefined}>
              {p.title}
            </a>
          ))}
        </nav>
        <SignOut session={session} />
      </header>
      <main id="main">
        <page.Component route={route} session={session} />
      </main>
    </div>
  );
}

function SignOut({ session }: { session: Session }) {
  const [error, setError] = useState<string | null>(null);
  return (
    <div class="who">
      <span title={session.key.scopes.join(', ')}>
        {session.key.name} <span class="muted">({session.key.prefix}…)</span>
      </span>
      <button
        type="button"
        onClick={() => {
          api('DELETE', '/api/session')
            .then(() => {
              stopLive();
              location.hash = '';
              location.reload();
            })
            .catch((err: unknown) => setError(messageOf(err)));
        }}
      >
        Sign out
      </button>
      <ErrorText error={error} />
    </div>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
