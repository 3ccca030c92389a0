ALTER TABLE "deploys" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "deploys" ADD COLUMN "lease_expires_at" bigint;--> statement-breakpoint
ALTER TABLE "deploys" ADD COLUMN "lease_generation" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "agent_rollouts" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "agent_rollouts" ADD COLUMN "lease_expires_at" bigint;--> statement-breakpoint
ALTER TABLE "agent_rollouts" ADD COLUMN "lease_generation" integer DEFAULT 0 NOT NULL;