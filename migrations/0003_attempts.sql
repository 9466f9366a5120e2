-- Count each job's runs, so a job that kills the bot every time it runs fails after two instead of crash-looping it.
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- times claim_next handed the job to the engine
