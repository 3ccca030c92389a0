ALTER TABLE `deploys` ADD `lease_owner` text;--> statement-breakpoint
ALTER TABLE `deploys` ADD `lease_expires_at` integer;--> statement-breakpoint
ALTER TABLE `deploys` ADD `lease_generation` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `agent_rollouts` ADD `lease_owner` text;--> statement-breakpoint
ALTER TABLE `agent_rollouts` ADD `lease_expires_at` integer;--> statement-breakpoint
ALTER TABLE `agent_rollouts` ADD `lease_generation` integer DEFAULT 0 NOT NULL;