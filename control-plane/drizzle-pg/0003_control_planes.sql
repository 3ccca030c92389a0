CREATE TABLE "control_planes" (
	"node_id" text PRIMARY KEY NOT NULL,
	"url" text NOT NULL,
	"started_at" bigint NOT NULL,
	"heartbeat_at" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "node_id" text;--> statement-breakpoint
ALTER TABLE "commands" ADD COLUMN "node_id" text;