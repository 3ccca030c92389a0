CREATE TABLE "mcp_sessions" (
	"session_id" text PRIMARY KEY NOT NULL,
	"node_id" text NOT NULL,
	"principal_hash" text,
	"created_at" bigint NOT NULL,
	"last_used_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "mcp_sessions_node_id_idx" ON "mcp_sessions" USING btree ("node_id");