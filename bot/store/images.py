"""The image files on disk: each finished job's PNGs in `<images_dir>/<job id>/`, the pictures of image prompts in
`<images_dir>/prompts/`, and Store's images part (read, prune, delete them)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import aiosqlite

from bot.errors import ImagesDeleted, ImagesGone, JobNotFound, UserError
from bot.store.db import StoreBase
from bot.store.records import Job

log = logging.getLogger(__name__)

PROMPT_GRACE = 3600.0  # seconds a kept picture that no job names yet is left alone (its job may be being admitted)


class Images(StoreBase):
    """Store's images part; it reads jobs with get_job (jobs.py) and meta with get_meta (members.py)."""

    # --- images ----------------------------------------------------------------------------------------------

    def _job_dir(self, job_id: int) -> Path:
        return self.images_dir / str(int(job_id))

    async def _read_image(self, job_id: int, name: str) -> bytes:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.images_deleted_at is not None:
            raise ImagesDeleted(job_id)
        if job.images_pruned:
            kept_days = await self.get_meta("store.images_kept_days")
            raise ImagesGone(None if kept_days is None else float(kept_days))
        if job.status != "done":
            raise UserError(f"Job #{job_id} has no images; it is {job.status}.")
        try:
            return await asyncio.to_thread((self._job_dir(job_id) / name).read_bytes)
        except FileNotFoundError:
            log.warning("job %d: %s is missing from %s", job_id, name, self._job_dir(job_id))
            raise ImagesGone() from None

    async def image(self, job_id: int, index: int) -> bytes:
        """PNG bytes of image `index` (1..n) of a finished job. Raises JobNotFound, ImagesGone, or ValueError if
        the job has no image with that index."""
        job = await self.get_job(job_id)
        if job is not None and job.status == "done" and not job.images_pruned and not 1 <= index <= job.image_count:
            raise ValueError(f"job {job_id} has images 1..{job.image_count}, not {index}")
        return await self._read_image(job_id, f"{int(index)}.png")

    async def grid(self, job_id: int) -> bytes:
        """PNG bytes of the job's grid. Raises JobNotFound, ImagesGone."""
        return await self._read_image(job_id, "grid.png")

    async def save_prompt_image(self, png: bytes) -> str:
        """Keep an image prompt's picture before its job is queued; returns the key its recipe names it by.

        Kept by content (the SHA-256 of its PNG), apart from the jobs' folders: the job that brought it and every
        🔄 of that job share one file, so a reroll still starts from it after the first job's images are deleted.
        """
        key = hashlib.sha256(png).hexdigest()
        await asyncio.to_thread(_write_files, self.images_dir / "prompts", {f"{key}.png": png})
        return key

    async def prompt_image(self, key: str) -> bytes:
        """PNG bytes of an image prompt kept by save_prompt_image. Raises ImagesGone if it is missing."""
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"an image prompt key is a SHA-256 in hex, got {key!r}")
        try:
            return await asyncio.to_thread((self.images_dir / "prompts" / f"{key}.png").read_bytes)
        except FileNotFoundError:
            log.warning("image prompt %s is missing from %s", key, self.images_dir / "prompts")
            raise ImagesGone() from None

    async def release_prompt_images(self, keys: Iterable[str], now: float | None = None) -> int:
        """Delete the kept pictures (save_prompt_image) that no job needs any more; returns how many went.

        A picture is needed while a job naming it is queued or running, or done with its images still kept (its
        🔄 starts from the picture again). A picture no job names at all (its prompt was refused after it was
        kept, or the bot stopped in between) goes once it is PROMPT_GRACE seconds old, so a picture kept a
        moment ago for a job being admitted now stays."""
        now = time.time() if now is None else now
        keys = [key for key in dict.fromkeys(keys) if re.fullmatch(r"[0-9a-f]{64}", key)]
        if not keys:
            return 0
        # One pass over the jobs for every key (the pictures a prune looks at may be many).
        rows = await self._read(
            """
            SELECT json_extract(recipe, '$.image_prompt') AS key,
                   MAX(status IN ('queued', 'running') OR (status = 'done' AND images_pruned = 0)) AS needed
              FROM jobs WHERE json_extract(recipe, '$.image_prompt') IS NOT NULL
             GROUP BY key
            """
        )
        needed = {row["key"]: bool(row["needed"]) for row in rows}  # every key some job names
        removed = 0
        for key in keys:
            path = self.images_dir / "prompts" / f"{key}.png"
            if needed.get(key):
                continue
            if key not in needed:
                try:
                    if now - path.stat().st_mtime < PROMPT_GRACE:
                        continue
                except FileNotFoundError:
                    continue
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
                removed += 1
        return removed

    async def prune_images(self, older_than_days: float, now: float | None = None) -> int:
        """Delete the image files of jobs finished more than `older_than_days` ago and mark them pruned; returns how
        many jobs lost their images. Files go first, so a crash half-way leaves nothing on disk unaccounted for.
        Then the kept pictures of image prompts that no job needs any more go too (release_prompt_images)."""
        now = time.time() if now is None else now
        cutoff = now - older_than_days * 86400
        rows = await self._read("SELECT id FROM jobs WHERE image_count > 0 AND finished_at < ? ORDER BY id", (cutoff,))
        job_ids = [job_id for (job_id,) in rows]
        for job_id in job_ids:
            await asyncio.to_thread(shutil.rmtree, self._job_dir(job_id), True)

        async def mark_pruned(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE jobs SET image_count = 0, images_pruned = 1 WHERE id = ?", [(job_id,) for job_id in job_ids]
            )
            # So that ImagesGone can say how long images are kept.
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('store.images_kept_days', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"{older_than_days:g}",),
            )

        await self._write(mark_pruned)
        if job_ids:
            log.debug("pruned the images of %d job(s) finished over %g days ago", len(job_ids), older_than_days)
        kept = await asyncio.to_thread(lambda: [path.stem for path in (self.images_dir / "prompts").glob("*.png")]
                                       if (self.images_dir / "prompts").is_dir() else [])
        await self.release_prompt_images(kept, now=now)
        return len(job_ids)

    async def delete_images(self, job_id: int, now: float | None = None) -> Job | None:
        """Delete a finished job's image files and mark them deleted, so its buttons say so (ImagesDeleted); None if
        there is no such finished job. Deleting twice is harmless. Files go first, as in prune_images."""
        now = time.time() if now is None else now
        job = await self.get_job(job_id)
        if job is None or job.status != "done":
            return None
        await asyncio.to_thread(shutil.rmtree, self._job_dir(job_id), True)
        row = await self._write_statement(
            """
            UPDATE jobs SET image_count = 0, images_pruned = 1, images_deleted_at = COALESCE(images_deleted_at, ?)
             WHERE id = ? AND status = 'done'
            RETURNING *
            """,
            (now, job_id),
        )
        if row is None:
            return None
        deleted = Job.from_row(row)
        if deleted.recipe.get("image_prompt"):  # the member's own picture goes too, unless a 🔄 of it still needs it
            await self.release_prompt_images([deleted.recipe["image_prompt"]], now=now)
        return deleted


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically: a reader sees the whole old file or the whole new one, never half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        temporary = directory / f".{name}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, directory / name)
