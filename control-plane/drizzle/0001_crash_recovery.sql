CREATE TABLE `harden_follow_ups` (
	`command_id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`instance_id` text NOT NULL,
	`key_id` text,
	`state` text NOT NULL,
	`answer` text,
	`created_at` integer NOT NULL,
	`finished_at` integer,
	FOREIGN KEY (`command_id`) REFERENCES `commands`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`instance_id`) REFERENCES `instances`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `harden_follow_ups_state_idx` ON `harden_follow_ups` (`state`);--> statement-breakpoint
ALTER TABLE `instances` ADD `status_reason` text;