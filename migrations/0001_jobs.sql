-- Jobs are the queue, the history and the rate-limit ledger at once, so a restart loses nothing.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    kind              TEXT    NOT NULL CHECK (kind IN ('imagine', 'reroll', 'variation', 'upscale')),
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
    images_pruned     INTEGER NOT NULL DEFAULT 0 CHECK (images_pruned IN (0, 1))
);

-- Admission: a user's recent jobs in a channel (the rolling hour).
CREATE INDEX jobs_by_user_channel ON jobs (user_id, channel_id, created_at);
-- Admission and the queue: only waiting jobs, so it stays small however long the history grows.
CREATE INDEX jobs_waiting ON jobs (user_id, channel_id) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (id) WHERE status = 'running';
-- Fair order: each user's last turn, and the next turn number (only jobs that started, so inserts skip them).
CREATE INDEX jobs_turns ON jobs (user_id, start_seq) WHERE start_seq IS NOT NULL;
CREATE INDEX jobs_start_seq ON jobs (start_seq) WHERE start_seq IS NOT NULL;
-- Pruning old images.
CREATE INDEX jobs_with_images ON jobs (finished_at) WHERE image_count > 0;
