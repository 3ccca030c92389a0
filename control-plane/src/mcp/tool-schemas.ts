import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import type { AnyToolSpec } from './tool.ts';

/**
 * Tool schemas as JSON Schema that every MCP client reads. zod writes `null | T` as
 * `"type": ["T", "null"]` and a loose object as `"additionalProperties": {}`; both are valid
 * JSON Schema, but some clients reject them (the MCP Inspector's `--strict` check flags them as
 * not portable). The same meaning, spelled portably: `anyOf` per type, and no keyword where
 * JSON Schema's default (any further property allowed) already says it.
 */
export type JsonSchema = { [key: string]: unknown };

/** Keywords that describe a schema rather than constrain a value: they stay outside an anyOf. */
const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly']);
/** Keywords whose value is one subschema. */
const ONE_SCHEMA = ['additionalProperties', 'items', 'additionalItems', 'contains', 'propertyNames', 'not', 'if', 'then', 'else'];
/** Keywords whose value is a list of subschemas. */
const SCHEMA_LIST = ['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items'];
/** Keywords whose value maps names to subschemas. */
const SCHEMA_MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas'];

function isSchema(v: unknown): v is JsonSchema {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `"type": [a, b]` as `anyOf: [{type: a, ...}, {type: b, ...}]`, the constraints moved into each branch. */
function splitTypeList(schema: JsonSchema): JsonSchema {
  const types: unknown = schema.type;
  if (!Array.isArray(types)) return schema;
  if (types.length === 1) return { ...schema, type: types[0] };
  const outer: JsonSchema = {};
  const constraints: JsonSchema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === 'type') continue;
    if (ANNOTATIONS.has(k)) outer[k] = v;
    else constraints[k] = v;
  }
  const branches = types.map((t: unknown) => (t === 'null' ? { type: 'null' } : { type: t, ...constraints }));
  return { ...outer, anyOf: branches };
}

/** The portable spelling of a JSON Schema (see above); the input is left as it was. */
export function portableSchema(schema: JsonSchema): JsonSchema {
  const out: JsonSchema = { ...schema };
  for (const key of ONE_SCHEMA) {
    const sub = out[key];
    if (isSchema(sub)) out[key] = portableSchema(sub);
  }
  for (const key of SCHEMA_LIST) {
    const list = out[key];
    if (Array.isArray(list)) out[key] = (list as unknown[]).map((s) => (isSchema(s) ? portableSchema(s) : s));
  }
  for (const key of SCHEMA_MAP) {
    const map = out[key];
    if (isSchema(map)) out[key] = Object.fromEntries(Object.entries(map).map(([k, s]) => [k, isSchema(s) ? portableSchema(s) : s]));
  }
  const extra = out.additionalProperties;
  // `{}` admits anything, which is what an absent keyword means too.
  if (isSchema(extra) && Object.keys(extra).length === 0) delete out.additionalProperties;
  return splitTypeList(out);
}

/** The JSON Schema of a tool's zod schema as tools/list shows it: draft-07, then made portable. */
export function toolJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  return portableSchema(z.toJSONSchema(schema, { target: 'draft-7', io }));
}

const listed = new WeakMap<AnyToolSpec, Tool>();

/** A tool as tools/list describes it (worked out once per tool). */
export function toolListing(tool: AnyToolSpec): Tool {
  const known = listed.get(tool);
  if (known) return known;
  const listing: Tool = {
    name: tool.name,
    title: tool.title,
    description: tool.description,
    inputSchema: toolJsonSchema(tool.inputSchema, 'input') as Tool['inputSchema'],
    outputSchema: toolJsonSchema(tool.outputSchema, 'output') as Tool['outputSchema'],
    annotations: { title: tool.title, ...tool.annotations },
  };
  listed.set(tool, listing);
  return listing;
}
