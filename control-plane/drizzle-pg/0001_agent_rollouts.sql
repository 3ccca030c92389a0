CREATE TABLE "agent_rollout_targets" (
	"id" text PRIMARY KEY NOT NULL,
	"rollout_id" text NOT NULL,
	"instance_id" text NOT NULL,
	"agent_id" text NOT NULL,
	"seq" integer NOT NULL,
	"batch" integer NOT NULL,
	"platform" text NOT NULL,
	"state" text NOT NULL,
	"from_version" text,
	"to_version" text,
	"command_id" text,
	"error_key" text,
	"error_message" text,
	"started_at" bigint,
	"finished_at" bigint
);
--> statement-breakpoint
CREATE TABLE "agent_rollouts" (
	"id" text PRIMARY KEY NOT NULL,
	"workspace_id" text NOT NULL,
	"key_id" text,
	"version" text NOT NULL,
	"allow_downgrade" boolean NOT NULL,
	"selection" json NOT NULL,
	"batch_size" integer NOT NULL,
	"max_failures" integer NOT NULL,
	"status" text NOT NULL,
	"error_key" text,
	"error_message" text,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	"finished_at" bigint
);
--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "platform" text;--> statement-breakpoint
ALTER TABLE "agent_rollout_targets" ADD CONSTRAINT "agent_rollout_targets_rollout_id_agent_rollouts_id_fk" FOREIGN KEY ("rollout_id") REFERENCES "public"."agent_rollouts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "agent_rollout_targets" ADD CONSTRAINT "agent_rollout_targets_instance_id_instances_id_fk" FOREIGN KEY ("instance_id") REFERENCES "public"."instances"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "agent_rollout_targets" ADD CONSTRAINT "agent_rollout_targets_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "agent_rollouts" ADD CONSTRAINT "agent_rollouts_workspace_id_workspaces_id_fk" FOREIGN KEY ("workspace_id") REFERENCES "public"."workspaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "agent_rollout_targets_seq_unique" ON "agent_rollout_targets" USING btree ("rollout_id","seq");--> statement-breakpoint
CREATE INDEX "agent_rollout_targets_agent_idx" ON "agent_rollout_targets" USING btree ("agent_id");--> statement-breakpoint
CREATE INDEX "agent_rollouts_workspace_idx" ON "agent_rollouts" USING btree ("workspace_id","id");--> statement-breakpoint
CREATE INDEX "agent_rollouts_status_idx" ON "agent_rollouts" USING btree ("status");--> statement-breakpoint
CREATE UNIQUE INDEX "agent_rollouts_one_running_per_workspace" ON "agent_rollouts" USING btree ("workspace_id") WHERE status = 'running';