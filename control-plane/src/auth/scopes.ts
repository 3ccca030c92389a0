export const SCOPES = [
  'repos:read',
  'repos:write',
  'instances:read',
  'instances:write',
  'instances:harden',
  'deploys:read',
  'deploys:write',
  'shell',
  'admin',
] as const;

export type Scope = (typeof SCOPES)[number];

/** `admin` implies every scope. */
export function hasScope(granted: readonly string[], needed: Scope): boolean {
  return granted.includes('admin') || granted.includes(needed);
}
