CREATE TABLE `control_planes` (
	`node_id` text PRIMARY KEY NOT NULL,
	`url` text NOT NULL,
	`started_at` integer NOT NULL,
	`heartbeat_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `agents` ADD `node_id` text;--> statement-breakpoint
ALTER TABLE `commands` ADD `node_id` text;