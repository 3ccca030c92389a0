import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { ConfirmButton, ErrorText, Section, Time } from '../components.tsx';
import { hasScope } from '../types.ts';
import type { PageProps } from './index.ts';

interface SshKey {
  id: string;
  type: string;
  fingerprint: string;
  comment: string | null;
  created_at: string;
  last_used_at: string | null;
}

/** The SSH keys that open gateway sessions as the signed-in API key (`ssh -p 2222 <instance>@<host>`). */
export function SshKeys({ session }: PageProps) {
  const [items, setItems] = useState<SshKey[] | null>(null);
  const [publicKey, setPublicKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [addError, setAddError] = useState<string | null>(null);
  const base = `/api/keys/${encodeURIComponent(session.key.id)}/ssh-keys`;
  const reload = useCallback(() => {
    api<{ items: SshKey[] }>('GET', base)
      .then((r) => {
        setItems(r.items);
        setError(null);
      })
      .catch((err: unknown) => setError(messageOf(err)));
  }, [base]);
  useEffect(reload, [reload]);
  if (!hasScope(session.key.scopes, 'shell')) {
    return <p class="muted">SSH keys open shell sessions through the SSH gateway: they need an API key with the shell scope.</p>;
  }
  return (
    <>
      <Section title={`SSH keys of ${session.key.name}`}>
        <p class="muted small">
          With one of these keys, <code>ssh -p 2222 &lt;instance&gt;@&lt;control plane host&gt;</code> opens a shell on an instance as this API key (same scope
          checks, recording and audit as the terminal).
        </p>
        <ErrorText error={error} />
        {items && items.length === 0 ? <p class="muted">None yet.</p> : null}
        {items && items.length > 0 ? (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Fingerprint</th>
                  <th scope="col">Comment</th>
                  <th scope="col">Added</th>
                  <th scope="col">Last used</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {items.map((k) => (
                  <tr key={k.id} data-ssh-key={k.fingerprint}>
                    <td>
                      <code>{k.fingerprint}</code>
                      <div class="muted small">{k.type}</div>
                    </td>
                    <td>{k.comment ?? '—'}</td>
                    <td>
                      <Time at={k.created_at} />
                    </td>
                    <td>
                      <Time at={k.last_used_at} />
                    </td>
                    <td>
                      <ConfirmButton
                        label="Remove"
                        confirmLabel="Remove this SSH key"
                        onConfirm={() => {
                          api('DELETE', `${base}/${encodeURIComponent(k.id)}`)
                            .then(reload)
                            .catch((err: unknown) => setError(messageOf(err)));
                        }}
                      />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </Section>
      <Section title="Add an SSH key">
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setAddError(null);
            api('POST', base, { public_key: publicKey.trim() })
              .then(() => {
                setPublicKey('');
                reload();
              })
              .catch((err: unknown) => setAddError(messageOf(err)));
          }}
        >
          <label>
            Public key (one line of ~/.ssh/id_ed25519.pub)
            <textarea name="public_key" rows={3} value={publicKey} required onInput={(e) => setPublicKey(e.currentTarget.value)} placeholder="ssh-ed25519 AAAA… you@laptop" />
          </label>
          <button type="submit" class="primary">
            Add SSH key
          </button>
          <ErrorText error={addError} />
        </form>
      </Section>
    </>
  );
}
