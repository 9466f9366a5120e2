-- Moderators tune limits and banned words per server and channel; the bot keeps small state (synced command tree hash).
CREATE TABLE limits (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,   -- 0 = the server-wide default (Discord ids are never 0)
    key        TEXT    NOT NULL CHECK (key IN ('enabled', 'jobs_per_hour', 'max_queued',
                                               'max_steps', 'max_side', 'nsfw_allowed')),
    value      TEXT    NOT NULL CHECK (json_valid(value)),
    PRIMARY KEY (guild_id, channel_id, key)
) WITHOUT ROWID;

CREATE TABLE banned_words (
    guild_id INTEGER NOT NULL,
    word     TEXT    NOT NULL,     -- lower-case, single-spaced
    PRIMARY KEY (guild_id, word)
) WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
