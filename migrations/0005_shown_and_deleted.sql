-- /show posts a job again and ❌ deletes it: every message showing a job, and when its images were deleted.
CREATE TABLE job_messages (
    message_id INTEGER PRIMARY KEY,                    -- a message /show posted (the first one is jobs.message_id)
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    channel_id INTEGER NOT NULL
);
-- A ❌ reaction names only its message: find the job behind it without reading every job.
CREATE INDEX jobs_by_message ON jobs (message_id) WHERE message_id IS NOT NULL;

ALTER TABLE jobs ADD COLUMN images_deleted_at REAL;  -- when its requester or a moderator deleted its images
