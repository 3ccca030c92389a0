/**
 * The dashboard's pages: one file each under pages/, listed here. A page is a Preact
 * component given the hash route's parts and the session; `nav` puts it in the top bar.
 */
import type { FunctionComponent } from 'preact';
import type { Session } from '../types.ts';
import { Instances } from './instances.tsx';
import { InstanceDetail } from './instance-detail.tsx';
import { Settings } from './settings.tsx';
import { AuditLog } from './audit.tsx';
import { Repos } from './repos.tsx';
import { Deploys } from './deploys.tsx';

export interface PageProps {
  route: string[];
  session: Session;
}

export interface Page {
  /** The first part of the hash route: #/<path>/... */
  path: string;
  title: string;
  nav: boolean;
  /** When the route has more parts than the path (e.g. an instance id). */
  detail?: FunctionComponent<PageProps>;
  Component: FunctionComponent<PageProps>;
}

export const PAGES: Page[] = [
  { path: 'instances', title: 'Instances', nav: true, Component: Instances, detail: InstanceDetail },
  { path: 'repos', title: 'Repos', nav: true, Component: Repos },
  { path: 'deploys', title: 'Deploys', nav: true, Component: Deploys },
  { path: 'audit', title: 'Audit log', nav: true, Component: AuditLog },
  { path: 'settings', title: 'Settings', nav: true, Component: Settings },
];

export function pageFor(route: string[]): Page {
  const found = PAGES.find((p) => p.path === route[0]) ?? PAGES[0];
  if (!found) throw new Error('no pages');
  if (route.length > 1 && found.detail) return { ...found, Component: found.detail };
  return found;
}
