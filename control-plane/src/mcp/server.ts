import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { errorBody } from '@vmkit/protocol';
import type { RestGateway } from './gateway.ts';
import { RestFailure, errorResult } from './tool.ts';
import type { AnyToolSpec, ToolContext } from './tool.ts';
import { toolListing } from './tool-schemas.ts';

export const MCP_SERVER_NAME = 'vmkit';
export const MCP_SERVER_VERSION = '0.1.0';
/** Most MCP clients give up after 60 s; no tool blocks longer than this by default. */
export const DEFAULT_MAX_WAIT_MS = 45_000;

export interface McpServerOptions {
  gateway: RestGateway;
  tools: readonly AnyToolSpec[];
  maxWaitMs?: number;
  onError?: (err: unknown, tool: string) => void;
}

function header(headers: Record<string, string | string[] | undefined> | undefined, name: string): string | undefined {
  const v = headers?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/** One MCP server (one per session) whose tools call the REST API as their caller. */
export function createMcpServer(opts: McpServerOptions, clientAddress?: string): McpServer {
  const server = new McpServer(
    { name: MCP_SERVER_NAME, version: MCP_SERVER_VERSION },
    { capabilities: { tools: {} }, instructions: 'VMKit: scan a repository, harden a VM, deploy with Kamal.' },
  );
  for (const tool of opts.tools) {
    // No outputSchema here: the SDK would zod-parse every answer against it, a copy of the
    // whole REST body per call (about a tenth of the envelope's CPU). tools/list still shows
    // it (below); the answers are the REST bodies, checked against it in tool-schemas.test.ts,
    // and MCP clients check structured content against the listed schema themselves.
    server.registerTool(
      tool.name,
      {
        title: tool.title,
        description: tool.description,
        inputSchema: tool.inputSchema,
        annotations: { title: tool.title, ...tool.annotations },
      },
      async (args: unknown, extra): Promise<CallToolResult> => {
        const authorization = header(extra.requestInfo?.headers, 'authorization');
        const progressToken = extra._meta?.progressToken;
        const ctx: ToolContext = {
          signal: extra.signal,
          maxWaitMs: opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS,
          call: (req) =>
            opts.gateway.request({ ...req, authorization, tool: tool.name, clientAddress, signal: extra.signal }),
          progress: async (progress, message, total) => {
            if (progressToken === undefined || extra.signal.aborted) return;
            await extra.sendNotification({
              method: 'notifications/progress',
              params: { progressToken, progress, message, ...(total === undefined ? {} : { total }) },
            });
          },
        };
        try {
          return await tool.run(args, ctx);
        } catch (err) {
          if (err instanceof RestFailure) return errorResult(err.response);
          opts.onError?.(err, tool.name);
          return errorResult({
            status: 500,
            body: errorBody('internal', `The ${tool.name} tool failed inside the MCP server.`),
            headers: {},
          });
        }
      },
    );
  }
  // The SDK validates arguments and answers with the zod schemas above; tools/list shows them
  // in the portable spelling (tool-schemas.ts). Replacing the SDK's list handler is the one
  // hook for that: it writes zod's JSON Schema as it comes.
  server.server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: opts.tools.map(toolListing) }));
  return server;
}
