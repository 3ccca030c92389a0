ALTER TABLE `shell_sessions` ADD `node_id` text;--> statement-breakpoint
CREATE INDEX `shell_sessions_open_node_idx` ON `shell_sessions` (`node_id`) WHERE ended_at IS NULL;