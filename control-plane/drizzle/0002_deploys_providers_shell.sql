CREATE TABLE `dns_records` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`zone` text NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`content` text NOT NULL,
	`ttl` integer NOT NULL,
	`owner` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `dns_records_name_type_unique` ON `dns_records` (`workspace_id`,`name`,`type`);--> statement-breakpoint
CREATE TABLE `ssh_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`key_id` text NOT NULL,
	`public_key` text NOT NULL,
	`fingerprint` text NOT NULL,
	`comment` text,
	`created_at` integer NOT NULL,
	`last_used_at` integer,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`key_id`) REFERENCES `api_keys`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `ssh_keys_fingerprint_unique` ON `ssh_keys` (`fingerprint`);--> statement-breakpoint
CREATE INDEX `ssh_keys_key_idx` ON `ssh_keys` (`key_id`);--> statement-breakpoint
CREATE TABLE `workspace_providers` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`kind` text NOT NULL,
	`provider` text NOT NULL,
	`settings` text NOT NULL,
	`secret_sealed` text,
	`secret_fingerprint` text,
	`secret_set_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `workspace_providers_kind_unique` ON `workspace_providers` (`workspace_id`,`kind`);--> statement-breakpoint
ALTER TABLE `deploy_steps` ADD `error_message` text;--> statement-breakpoint
ALTER TABLE `deploy_steps` ADD `attempts` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `deploys` ADD `failed_step` text;--> statement-breakpoint
ALTER TABLE `deploys` ADD `pr_number` integer;--> statement-breakpoint
ALTER TABLE `deploys` ADD `run_id` integer;--> statement-breakpoint
ALTER TABLE `deploys` ADD `dispatched_at` integer;--> statement-breakpoint
ALTER TABLE `deploys` ADD `key_id` text;--> statement-breakpoint
CREATE INDEX `deploys_environment_idx` ON `deploys` (`environment_id`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `deploys_one_running_per_environment` ON `deploys` (`environment_id`) WHERE status = 'running';--> statement-breakpoint
ALTER TABLE `instances` ADD `ssh_host_keys` text;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `exit_signal` text;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `command` text;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `run_as` text;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `bytes_in` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `bytes_out` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `shell_sessions` ADD `end_reason` text;--> statement-breakpoint
CREATE INDEX `shell_sessions_workspace_idx` ON `shell_sessions` (`workspace_id`,`id`);