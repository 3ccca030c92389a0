/**
 * `npm run build:agent [-- --platform linux-x64] [--version 1.2.3] [--out DIR]`: the
 * agent as one executable per platform (scripts/agent-build/build.ts). The default
 * output, dist/agent/<version>/<platform>/, is the layout a control plane serves
 * releases from: build into its releases folder with --out, or copy the folder there.
 */
import { parseArgs } from 'node:util';
import { AgentBuildError, BUILD_FAULTS, buildAgent } from './agent-build/build.ts';
import type { BuildFault } from './agent-build/build.ts';

const USAGE = 'usage: npm run build:agent -- [--platform linux-x64] [--version X.Y.Z] [--out DIR]\n';

try {
  const { values } = parseArgs({
    options: {
      platform: { type: 'string' },
      version: { type: 'string' },
      out: { type: 'string' },
      // Tests build a misbehaving release with it; never a real release.
      fault: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
  } else {
    if (values.fault !== undefined && !(BUILD_FAULTS as readonly string[]).includes(values.fault)) {
      throw new AgentBuildError(`--fault must be one of ${BUILD_FAULTS.join(', ')}`);
    }
    const result = await buildAgent({
      ...(values.platform === undefined ? {} : { platform: values.platform }),
      ...(values.version === undefined ? {} : { version: values.version }),
      ...(values.out === undefined ? {} : { out: values.out }),
      ...(values.fault === undefined ? {} : { fault: values.fault as BuildFault }),
    });
    process.stdout.write(`${result.file}\n`);
  }
} catch (err) {
  if (err instanceof AgentBuildError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    process.stderr.write(`build-agent: ${(err as Error).message}\n${USAGE}`);
    process.exitCode = 2;
  } else {
    throw err;
  }
}
