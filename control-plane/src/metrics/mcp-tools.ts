import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { ERRORS } from '@vmkit/protocol';
import { AUTH_FAILED_TEXT, RestFailure, errorResult } from '../mcp/tool.ts';
import type { AnyToolSpec } from '../mcp/tool.ts';

/** Where measured tools report (ControlPlaneMetrics fits). */
export interface ToolMetrics {
  mcpToolCall(tool: string, outcome: string, seconds: number): void;
}

/**
 * `ok`, or the error key the tool answered (from the registry, so the label stays
 * bounded whatever a body says): `unauthorized` for the contract's auth sentence.
 */
export function toolOutcomeOf(result: CallToolResult): string {
  if (result.isError !== true) return 'ok';
  const first = result.content[0];
  const text = first?.type === 'text' ? first.text : '';
  if (text === AUTH_FAILED_TEXT) return 'unauthorized';
  try {
    const key = (JSON.parse(text) as { error?: unknown }).error;
    if (typeof key === 'string' && Object.hasOwn(ERRORS, key)) return key;
  } catch {
    // not a JSON error body
  }
  return 'error';
}

/** The tools, each call timed from the SDK's dispatch to the result (its REST calls included). */
export function measuredTools(tools: readonly AnyToolSpec[], metrics: ToolMetrics | undefined): AnyToolSpec[] {
  if (!metrics) return [...tools];
  return tools.map((tool) => ({
    ...tool,
    run: async (args, ctx) => {
      const started = performance.now();
      let outcome = 'internal';
      try {
        const result = await tool.run(args, ctx);
        outcome = toolOutcomeOf(result);
        return result;
      } catch (err) {
        // The MCP server turns a failed REST answer into the tool's error result; anything else is internal.
        if (err instanceof RestFailure) outcome = toolOutcomeOf(errorResult(err.response));
        throw err;
      } finally {
        metrics.mcpToolCall(tool.name, outcome, (performance.now() - started) / 1000);
      }
    },
  }));
}
