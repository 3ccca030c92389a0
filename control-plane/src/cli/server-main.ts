// Placeholder until the control-plane core lands: says what `npm start` will run.
process.stdout.write(
  [
    'vmkit control plane (not yet runnable)',
    'npm start will: open ./data/vmkit.sqlite (WAL), apply migrations, create the first',
    'workspace and admin key, and serve REST (/api), MCP (/mcp) and the agent hub',
    '(/agent/v1/connect) on http://127.0.0.1:8080.',
    '',
  ].join('\n'),
);
