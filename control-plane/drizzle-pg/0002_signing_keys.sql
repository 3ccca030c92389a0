CREATE TABLE "signing_keys" (
	"key_id" text PRIMARY KEY NOT NULL,
	"public_key" text NOT NULL,
	"state" text NOT NULL,
	"sealed_private_key" text NOT NULL,
	"created_at" bigint NOT NULL,
	"retired_at" bigint
);
