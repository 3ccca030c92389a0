// tap's `before` (package.json), once per run:
// - builds the control plane (control-plane/dist), since the bins every CLI and process test
//   starts run the built code, as a production install does. The dashboard is not built
//   here: its tests build their own into temp dirs.
// - bundles the agent as its executable carries it, for the agent processes the tests start
//   (test/agent/agent-process.ts). Built into a fresh folder that then replaces the old one,
//   so a run never sees half a bundle.
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { platformOf } from '@vmkit/protocol';
import { buildControlPlane } from '../control-plane/src/build.ts';
import { bundleAgent, packageVersion, ptyAddon } from '../scripts/agent-build/build.ts';
import { AGENT_BUNDLE, AGENT_BUNDLE_DIR } from './agent/agent-process.ts';

const platform = platformOf(process.platform, process.arch);
if (platform === undefined) throw new Error(`the agent is not built for ${process.platform}-${process.arch}`);
const stage = `${AGENT_BUNDLE_DIR}.${process.pid}.tmp`;
rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });
try {
  await Promise.all([buildControlPlane(), bundleAgent(join(stage, 'agent.cjs'), { version: packageVersion(), pty: ptyAddon(platform), fromSources: true })]);
  rmSync(AGENT_BUNDLE_DIR, { recursive: true, force: true });
  renameSync(stage, AGENT_BUNDLE_DIR);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
process.stdout.write(`agent bundle: ${AGENT_BUNDLE}\n`);
