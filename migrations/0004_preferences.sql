-- Each member's own preferences in a server (/settings, /prefer suffix); a member without a row has the defaults.
CREATE TABLE preferences (
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    remix     INTEGER NOT NULL DEFAULT 0 CHECK (remix IN (0, 1)),      -- buttons first open a "Remix" modal
    variation TEXT    NOT NULL DEFAULT 'strong' CHECK (variation IN ('strong', 'subtle')),  -- what V1-V4 use
    aspect    TEXT    CHECK (aspect IS NULL OR length(aspect) BETWEEN 3 AND 7),  -- NULL: the model's default
    suffix    TEXT    NOT NULL DEFAULT '' CHECK (length(suffix) <= 500),  -- appended to every prompt
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;
