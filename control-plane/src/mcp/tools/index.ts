import type { AnyToolSpec } from '../tool.ts';
import { deploy } from './deploy.ts';
import { getDeploy } from './deploys.ts';
import { hardenVm } from './harden-vm.ts';
import { getInstance, listInstances } from './instances.ts';
import { scanRepo } from './scan-repo.ts';

/** Every tool the MCP server offers; each one is a thin REST client. */
export const TOOLS: AnyToolSpec[] = [scanRepo, hardenVm, deploy, listInstances, getInstance, getDeploy];
