/*
 * migrations.c — the SQL schema of wolfpackd, as numbered migrations compiled in.
 *
 * Append only: a released migration is never edited; a schema change is a new
 * entry with the next version. Each entry runs in its own transaction (see
 * migrate.c), so a script may hold several statements but must not contain
 * BEGIN/COMMIT or statements that refuse transactions (CREATE INDEX
 * CONCURRENTLY, VACUUM). Migration 1 creates the tables of DESIGN.md §3:
 *   nodes               GPU nodes (agent-reported facts + admin settings)
 *   tokens              bearer tokens, stored as SHA-256 only
 *   sessions            streaming sessions placed on nodes
 *   events              append-only audit log (UPDATE is refused by a trigger)
 *   webhook_deliveries  outbox of webhook calls
 *   replicas            HA membership heartbeats of wolfpackd replicas
 * Status columns carry CHECK constraints with the allowed states; ids that
 * come from outside are constrained to a safe alphabet and length.
 */
#include <stddef.h>

#include "migrate.h"

static const char migration_0001_initial[] =
    "CREATE FUNCTION wp_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    NEW.updated_at := now();\n"
    "    RETURN NEW;\n"
    "END $$;\n"
    "\n"
    "CREATE TABLE replicas (\n"
    "    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),\n"
    "    address         text NOT NULL DEFAULT '' CHECK (length(address) <= 256),\n"
    "    version         text NOT NULL DEFAULT '' CHECK (length(version) <= 64),\n"
    "    started_at      timestamptz NOT NULL DEFAULT now(),\n"
    "    last_heartbeat  timestamptz NOT NULL DEFAULT now(),\n"
    "    created_at      timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at      timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE INDEX replicas_heartbeat_idx ON replicas (last_heartbeat);\n"
    "\n"
    "CREATE TABLE nodes (\n"
    "    id                text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),\n"
    "    name              text NOT NULL DEFAULT '' CHECK (length(name) <= 128),\n"
    "    status            text NOT NULL DEFAULT 'offline'\n"
    "                      CHECK (status IN ('online', 'degraded', 'draining', 'offline')),\n"
    "    enabled           boolean NOT NULL DEFAULT true,\n"
    "    draining          boolean NOT NULL DEFAULT false,\n"
    "    preregistered     boolean NOT NULL DEFAULT false,\n"
    "    labels            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),\n"
    "    max_sessions      integer NOT NULL DEFAULT 1 CHECK (max_sessions BETWEEN 0 AND 10000),\n"
    "    active_sessions   integer NOT NULL DEFAULT 0 CHECK (active_sessions >= 0),\n"
    "    services          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(services) = 'array'),\n"
    "    gpus              jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(gpus) = 'array'),\n"
    "    wolf_health       jsonb NOT NULL DEFAULT '{}'\n"
    "                      CHECK (jsonb_typeof(wolf_health) = 'object'),\n"
    "    load              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(load) = 'object'),\n"
    "    version           text NOT NULL DEFAULT '' CHECK (length(version) <= 64),\n"
    "    connected_replica text,\n"
    "    last_heartbeat    timestamptz,\n"
    "    last_assigned_at  timestamptz,\n"
    "    created_at        timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at        timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE INDEX nodes_status_idx ON nodes (status);\n"
    "CREATE INDEX nodes_heartbeat_idx ON nodes (last_heartbeat) WHERE status <> 'offline';\n"
    "CREATE INDEX nodes_labels_idx ON nodes USING gin (labels jsonb_path_ops);\n"
    "CREATE TRIGGER nodes_touch BEFORE UPDATE ON nodes\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_touch_updated_at();\n"
    "\n"
    "CREATE TABLE tokens (\n"
    "    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),\n"
    "    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),\n"
    "    role          text NOT NULL CHECK (role IN ('admin', 'user', 'agent')),\n"
    "    hash          bytea NOT NULL UNIQUE CHECK (length(hash) = 32),\n"
    "    node_id       text CHECK (node_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),\n"
    "    expires_at    timestamptz,\n"
    "    revoked_at    timestamptz,\n"
    "    last_used_at  timestamptz,\n"
    "    created_at    timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at    timestamptz NOT NULL DEFAULT now(),\n"
    "    CHECK (node_id IS NULL OR role = 'agent')\n"
    ");\n"
    "CREATE INDEX tokens_role_idx ON tokens (role) WHERE revoked_at IS NULL;\n"
    "CREATE TRIGGER tokens_touch BEFORE UPDATE ON tokens\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_touch_updated_at();\n"
    "\n"
    "CREATE TABLE sessions (\n"
    "    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),\n"
    "    owner_token_id    uuid REFERENCES tokens (id) ON DELETE SET NULL,\n"
    "    owner             text NOT NULL DEFAULT '' CHECK (length(owner) <= 128),\n"
    "    node_id           text REFERENCES nodes (id) ON DELETE SET NULL,\n"
    "    status            text NOT NULL DEFAULT 'pending'\n"
    "                      CHECK (status IN ('pending', 'starting', 'running', 'stopping',\n"
    "                                        'stopped', 'failed', 'lost')),\n"
    "    wolf_lobby_id     text CHECK (length(wolf_lobby_id) <= 128),\n"
    "    wolf_pin          text CHECK (wolf_pin ~ '^[0-9]{4,8}$'),\n"
    "    sandbox_container text CHECK (sandbox_container ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),\n"
    "    request           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(request) = 'object'),\n"
    "    failure_reason    text CHECK (length(failure_reason) <= 1024),\n"
    "    created_at        timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at        timestamptz NOT NULL DEFAULT now(),\n"
    "    started_at        timestamptz,\n"
    "    stopped_at        timestamptz\n"
    ");\n"
    "CREATE INDEX sessions_node_active_idx ON sessions (node_id)\n"
    "    WHERE status IN ('pending', 'starting', 'running', 'stopping');\n"
    "CREATE INDEX sessions_owner_idx ON sessions (owner_token_id, created_at);\n"
    "CREATE INDEX sessions_status_idx ON sessions (status);\n"
    "CREATE TRIGGER sessions_touch BEFORE UPDATE ON sessions\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_touch_updated_at();\n"
    "\n"
    "CREATE TABLE events (\n"
    "    id          bigserial PRIMARY KEY,\n"
    "    created_at  timestamptz NOT NULL DEFAULT now(),\n"
    "    type        text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_.]{0,63}$'),\n"
    "    node_id     text,\n"
    "    session_id  uuid,\n"
    "    token_id    uuid,\n"
    "    replica_id  text,\n"
    "    message     text NOT NULL DEFAULT '' CHECK (length(message) <= 1024),\n"
    "    data        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object')\n"
    ");\n"
    "CREATE INDEX events_node_idx ON events (node_id, id) WHERE node_id IS NOT NULL;\n"
    "CREATE INDEX events_session_idx ON events (session_id, id) WHERE session_id IS NOT NULL;\n"
    "CREATE INDEX events_created_idx ON events (created_at);\n"
    "CREATE FUNCTION wp_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    RAISE EXCEPTION 'events are append-only';\n"
    "END $$;\n"
    "CREATE TRIGGER events_append_only BEFORE UPDATE ON events\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_events_append_only();\n"
    "\n"
    "CREATE TABLE webhook_deliveries (\n"
    "    id               bigserial PRIMARY KEY,\n"
    "    event_id         bigint REFERENCES events (id) ON DELETE CASCADE,\n"
    "    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),\n"
    "    payload          jsonb NOT NULL,\n"
    "    status           text NOT NULL DEFAULT 'pending'\n"
    "                     CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),\n"
    "    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
    "    next_attempt_at  timestamptz NOT NULL DEFAULT now(),\n"
    "    locked_by        text,\n"
    "    locked_until     timestamptz,\n"
    "    last_status_code integer,\n"
    "    last_error       text CHECK (length(last_error) <= 1024),\n"
    "    delivered_at     timestamptz,\n"
    "    created_at       timestamptz NOT NULL DEFAULT now(),\n"
    "    updated_at       timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)\n"
    "    WHERE status IN ('pending', 'delivering');\n"
    "CREATE TRIGGER webhook_deliveries_touch BEFORE UPDATE ON webhook_deliveries\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_touch_updated_at();\n"
    "CREATE TRIGGER replicas_touch BEFORE UPDATE ON replicas\n"
    "    FOR EACH ROW EXECUTE FUNCTION wp_touch_updated_at();\n";

/*
 * Migration 2 — node registry and events (issue 4, items 6-8):
 *   nodes.gpu_stats     per-GPU live stats from the last heartbeat (array)
 *   nodes.wolf_healthy  the last heartbeat's verdict on Wolf (all probes ok)
 *   nodes.gpu_vendor    derived from the inventory: best of nvidia > amd > intel > none,
 *                       a stored generated column so filters and the scheduler can index it
 *   events_type_idx     filtering the event log by type
 */
static const char migration_0002_node_registry[] =
    "ALTER TABLE nodes\n"
    "    ADD COLUMN gpu_stats jsonb NOT NULL DEFAULT '[]'\n"
    "        CHECK (jsonb_typeof(gpu_stats) = 'array'),\n"
    "    ADD COLUMN wolf_healthy boolean NOT NULL DEFAULT true,\n"
    "    ADD COLUMN gpu_vendor text GENERATED ALWAYS AS (\n"
    "        CASE WHEN gpus @> '[{\"vendor\": \"nvidia\"}]' THEN 'nvidia'\n"
    "             WHEN gpus @> '[{\"vendor\": \"amd\"}]' THEN 'amd'\n"
    "             WHEN gpus @> '[{\"vendor\": \"intel\"}]' THEN 'intel'\n"
    "             ELSE 'none' END) STORED;\n"
    "CREATE INDEX nodes_gpu_vendor_idx ON nodes (gpu_vendor);\n"
    "CREATE INDEX events_type_idx ON events (type, id);\n";

/*
 * Migration 3 — sessions (issue 5):
 *   nodes.cooldown_until  a failed session start keeps the node degraded (and out of the
 *                         scheduler) until then; heartbeats do not flip it back earlier
 *   sessions.name         the session's display name (also in request)
 *   sessions.attempts     how many nodes a start was tried on
 *   sessions_recovery_idx pending/starting/stopping sessions by age, for the recovery pass
 *   sessions_container_idx a session by its sandbox container (orphan lobbies name it)
 */
static const char migration_0003_sessions[] =
    "ALTER TABLE nodes ADD COLUMN cooldown_until timestamptz;\n"
    "ALTER TABLE sessions\n"
    "    ADD COLUMN name text NOT NULL DEFAULT '' CHECK (length(name) <= 128),\n"
    "    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0);\n"
    "CREATE INDEX sessions_recovery_idx ON sessions (updated_at)\n"
    "    WHERE status IN ('pending', 'starting', 'stopping');\n"
    "CREATE INDEX sessions_container_idx ON sessions (sandbox_container)\n"
    "    WHERE sandbox_container IS NOT NULL;\n";

const cp_migration cp_migrations[] = {
    {1, "initial", migration_0001_initial},
    {2, "node_registry", migration_0002_node_registry},
    {3, "sessions", migration_0003_sessions},
};

const size_t cp_migrations_count = sizeof cp_migrations / sizeof cp_migrations[0];
