/** Hash routes (#/instances/inst_...): the server serves one page at `/`, so links survive reloads without server routes. */
import { useEffect, useState } from 'preact/hooks';

export function currentRoute(): string[] {
  const path = location.hash.replace(/^#\/?/, '').split('?')[0] ?? '';
  return path.split('/').filter((p) => p !== '').map(decodeURIComponent);
}

/** The query of the hash route (#/deploys?repo=owner/name&dest=staging). */
export function routeQuery(): URLSearchParams {
  const at = location.hash.indexOf('?');
  return new URLSearchParams(at < 0 ? '' : location.hash.slice(at + 1));
}

export function useRoute(): string[] {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function href(...parts: string[]): string {
  return `#/${parts.map(encodeURIComponent).join('/')}`;
}

export function go(...parts: string[]): void {
  location.hash = href(...parts);
}
