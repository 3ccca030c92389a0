// `vmkit`: the operator CLI (a REST client of the control plane).
import { runVmkitCli } from './vmkit.ts';
import { processIo } from './output.ts';

process.exitCode = await runVmkitCli(process.argv.slice(2), processIo);
