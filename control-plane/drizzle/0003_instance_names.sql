-- Databases from before the rule may hold two live instances of one name: every one but the
-- oldest gets its id's tail appended, so the index below can be built.
UPDATE `instances` SET `name` = substr(`name`, 1, 56) || '-' || substr(`id`, -7)
WHERE `status` <> 'destroyed' AND EXISTS (
  SELECT 1 FROM `instances` AS `older`
  WHERE `older`.`workspace_id` = `instances`.`workspace_id` AND lower(`older`.`name`) = lower(`instances`.`name`)
    AND `older`.`status` <> 'destroyed' AND (`older`.`created_at` < `instances`.`created_at` OR (`older`.`created_at` = `instances`.`created_at` AND `older`.`id` < `instances`.`id`))
);--> statement-breakpoint
CREATE UNIQUE INDEX `instances_name_per_workspace` ON `instances` (`workspace_id`,lower("name")) WHERE status <> 'destroyed';
