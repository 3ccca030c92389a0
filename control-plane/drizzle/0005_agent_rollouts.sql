CREATE TABLE `agent_rollout_targets` (
	`id` text PRIMARY KEY NOT NULL,
	`rollout_id` text NOT NULL,
	`instance_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`seq` integer NOT NULL,
	`batch` integer NOT NULL,
	`platform` text NOT NULL,
	`state` text NOT NULL,
	`from_version` text,
	`to_version` text,
	`command_id` text,
	`error_key` text,
	`error_message` text,
	`started_at` integer,
	`finished_at` integer,
	FOREIGN KEY (`rollout_id`) REFERENCES `agent_rollouts`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`instance_id`) REFERENCES `instances`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`agent_id`) REFERENCES `agents`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `agent_rollout_targets_seq_unique` ON `agent_rollout_targets` (`rollout_id`,`seq`);--> statement-breakpoint
CREATE INDEX `agent_rollout_targets_agent_idx` ON `agent_rollout_targets` (`agent_id`);--> statement-breakpoint
CREATE TABLE `agent_rollouts` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`key_id` text,
	`version` text NOT NULL,
	`allow_downgrade` integer NOT NULL,
	`selection` text NOT NULL,
	`batch_size` integer NOT NULL,
	`max_failures` integer NOT NULL,
	`status` text NOT NULL,
	`error_key` text,
	`error_message` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`finished_at` integer,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `agent_rollouts_workspace_idx` ON `agent_rollouts` (`workspace_id`,`id`);--> statement-breakpoint
CREATE INDEX `agent_rollouts_status_idx` ON `agent_rollouts` (`status`);--> statement-breakpoint
CREATE UNIQUE INDEX `agent_rollouts_one_running_per_workspace` ON `agent_rollouts` (`workspace_id`) WHERE status = 'running';--> statement-breakpoint
ALTER TABLE `agents` ADD `platform` text;