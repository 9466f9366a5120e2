-- Zoom Out and Pan are new job kinds; SQLite cannot alter a CHECK, so jobs is rebuilt with every column and index.
-- The store runs each migration with foreign keys off and checks them before it commits (SQLite's own recipe for
-- changing a table: https://www.sqlite.org/lang_altertable.html#otheralter), so job_messages and parent_id keep
-- pointing at the same rows.
CREATE TABLE jobs_new (
    id                INTEGER PRIMARY KEY,
    kind              TEXT    NOT NULL
                              CHECK (kind IN ('imagine', 'reroll', 'variation', 'upscale', 'zoom', 'pan')),
    status            TEXT    NOT NULL DEFAULT 'queued'
                              CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id           INTEGER NOT NULL,
    guild_id          INTEGER,                       -- NULL in direct messages
    channel_id        INTEGER NOT NULL,
    recipe            TEXT    NOT NULL CHECK (json_valid(recipe)),
    parent_id         INTEGER REFERENCES jobs (id),  -- the job whose image a button re-used
    created_at        REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    -- Order in which jobs were handed to the engine (1, 2, 3...): the fair queue takes the user whose
    -- last turn is oldest. A queued job with a start_seq was interrupted by a restart and runs first.
    start_seq         INTEGER,
    error             TEXT,
    message_id        INTEGER,
    interaction_token TEXT,
    token_expires_at  REAL,
    result            TEXT    CHECK (result IS NULL OR json_valid(result)),
    image_count       INTEGER NOT NULL DEFAULT 0,
    images_pruned     INTEGER NOT NULL DEFAULT 0 CHECK (images_pruned IN (0, 1)),
    attempts          INTEGER NOT NULL DEFAULT 0,    -- 0003: times claim_next handed the job to the engine
    images_deleted_at REAL                           -- 0005: when its requester or a moderator deleted its images
);

INSERT INTO jobs_new (id, kind, status, user_id, guild_id, channel_id, recipe, parent_id, created_at, started_at,
                      finished_at, start_seq, error, message_id, interaction_token, token_expires_at, result,
                      image_count, images_pruned, attempts, images_deleted_at)
SELECT id, kind, status, user_id, guild_id, channel_id, recipe, parent_id, created_at, started_at,
       finished_at, start_seq, error, message_id, interaction_token, token_expires_at, result,
       image_count, images_pruned, attempts, images_deleted_at
  FROM jobs;

DROP TABLE jobs;  -- and its indexes
ALTER TABLE jobs_new RENAME TO jobs;

-- Every index of 0001 and 0005, as they were.
CREATE INDEX jobs_by_user_channel ON jobs (user_id, channel_id, created_at);
CREATE INDEX jobs_waiting ON jobs (user_id, channel_id) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (id) WHERE status = 'running';
CREATE INDEX jobs_turns ON jobs (user_id, start_seq) WHERE start_seq IS NOT NULL;
CREATE INDEX jobs_start_seq ON jobs (start_seq) WHERE start_seq IS NOT NULL;
CREATE INDEX jobs_with_images ON jobs (finished_at) WHERE image_count > 0;
CREATE INDEX jobs_by_message ON jobs (message_id) WHERE message_id IS NOT NULL;
