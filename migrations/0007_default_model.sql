-- A channel's (or the server's) default model, /limits set model: the limits table takes the key 'model'.
-- The table holds one row per setting, so the model is a row (absent: no default of its own), not a column; SQLite
-- cannot change a CHECK, so the table is rebuilt with every row kept (it has no other index, trigger or view).
CREATE TABLE limits_new (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,   -- 0 = the server-wide default (Discord ids are never 0)
    key        TEXT    NOT NULL CHECK (key IN ('enabled', 'jobs_per_hour', 'max_queued',
                                               'max_steps', 'max_side', 'nsfw_allowed', 'model')),
    value      TEXT    NOT NULL CHECK (json_valid(value)),  -- 'model': a configured name, as a JSON string
    PRIMARY KEY (guild_id, channel_id, key)
) WITHOUT ROWID;

INSERT INTO limits_new (guild_id, channel_id, key, value) SELECT guild_id, channel_id, key, value FROM limits;
DROP TABLE limits;
ALTER TABLE limits_new RENAME TO limits;
