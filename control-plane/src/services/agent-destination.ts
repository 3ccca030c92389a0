import type { Config } from '../config.ts';
import type { AgentEnrollment } from '../providers/compute/types.ts';

export type AgentDestination = Pick<AgentEnrollment, 'control_plane_url' | 'more_control_plane_urls' | 'ca_pem'>;

/**
 * What the agent of a VM this control plane provisions is told to reach: the first
 * `--agent-url` (where install.sh comes from and enrollment goes first; else the public
 * URL), the fleet's others, and the private CA the control plane's certificate is from.
 */
export function agentDestination(config: Pick<Config, 'agentUrls' | 'agentCa'>, publicUrl: string): AgentDestination {
  const [first, ...more] = config.agentUrls ?? [];
  return {
    control_plane_url: first ?? publicUrl,
    ...(more.length > 0 ? { more_control_plane_urls: more } : {}),
    ...(config.agentCa !== undefined ? { ca_pem: config.agentCa.pem } : {}),
  };
}
