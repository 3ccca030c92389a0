// `vmkit-control-plane` (and `npm start`, which runs `serve`).
import { runServerCli } from './server-cli.ts';
import { processIo } from './output.ts';

process.exitCode = await runServerCli(process.argv.slice(2), processIo);
