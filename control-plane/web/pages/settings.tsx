import { href } from '../router.ts';
import type { PageProps } from './index.ts';
import { ApiKeys } from './keys.tsx';
import { SshKeys } from './ssh-keys.tsx';
import { Integrations } from './integrations.tsx';

const TABS = [
  { path: 'keys', title: 'API keys', Component: ApiKeys },
  { path: 'ssh-keys', title: 'SSH keys', Component: SshKeys },
  { path: 'integrations', title: 'Integrations', Component: Integrations },
] as const;

/** Settings: #/settings/<tab> (API keys by default). */
export function Settings(props: PageProps) {
  const tab = TABS.find((t) => t.path === props.route[1]) ?? TABS[0];
  return (
    <>
      <h1>Settings</h1>
      <nav class="tabs" aria-label="Settings">
        {TABS.map((t) => (
          <a key={t.path} href={href('settings', t.path)} aria-current={t === tab ? 'page' : undefined}>
            {t.title}
          </a>
        ))}
      </nav>
      <tab.Component {...props} />
    </>
  );
}
