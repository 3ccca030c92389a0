import { useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { ErrorText } from '../components.tsx';
import type { Session } from '../types.ts';

export function SignIn({ ended, onSignedIn }: { ended: string | null; onSignedIn: (s: Session) => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <h1>VMKit</h1>
      {ended && (
        <p class="notice" role="status">
          Your session ended: {ended}
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          api<Session>('POST', '/api/session', { key })
            .then((s) => {
              setKey('');
              onSignedIn(s);
            })
            .catch((err: unknown) => setError(messageOf(err)))
            .finally(() => setBusy(false));
        }}
      >
        <label for="api-key">API key</label>
        <input
          id="api-key"
          name="key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          placeholder="vmk_…"
          value={key}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? 'signin-error' : undefined}
          onInput={(e) => setKey(e.currentTarget.value)}
          required
          autoFocus
        />
        <ErrorText error={error} id="signin-error" />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
      <p class="muted small">
        The key stays on the server: it is exchanged for a session cookie that ends when you sign out, after 12 hours, or when the key is revoked or expires. The
        first admin key is in <code>data/admin.key</code>; more are made under Settings.
      </p>
    </main>
  );
}
