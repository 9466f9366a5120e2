"""User stories over the SQLite store, on real database files in tmp_path."""

import asyncio
import contextlib
import random
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from bot.errors import ImagesGone, InvalidLimit, JobNotFound, RateLimited, TooManyQueued, UserError
from bot.store import (INTERRUPTED_TOO_OFTEN, LOST_TOO_OFTEN, Limits, MigrationError, Preferences, SchemaTooNew,
                       Store, migrations_folder)

T0 = 1_700_000_000.0
OPEN = Limits(jobs_per_hour=1000, max_queued=1000)  # limits that never refuse, for queue stories
MIGRATIONS = sorted(migrations_folder().glob("*.sql"))  # a checkout: a folder on disk


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "imagine.db")
    yield store
    await store.close()


async def queue(store, user_id, *, channel_id=10, limits=OPEN, now=T0, recipe=None, **kwargs):
    return await store.admit(
        kind="imagine", user_id=user_id, guild_id=1, channel_id=channel_id, recipe=recipe or {"prompt": "a cat"},
        limits=limits, now=now, **kwargs,
    )


def user_version(path):
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def tables(path):
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def migrations_dir_with(tmp_path, files, extra=None):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for file in files:
        shutil.copy(file, folder / file.name)
    for name, sql in (extra or {}).items():
        (folder / name).write_text(sql)
    return folder


# --- migrations -------------------------------------------------------------------------------------------------


async def test_empty_database_is_migrated_to_the_latest_version(tmp_path):
    """Opening a new file creates every table and records the latest schema version."""
    async with await Store.open(tmp_path / "imagine.db"):
        pass
    assert len(MIGRATIONS) >= 2
    assert user_version(tmp_path / "imagine.db") == len(MIGRATIONS)
    assert {"jobs", "limits", "banned_words", "meta"} <= tables(tmp_path / "imagine.db")


@pytest.mark.parametrize("start", range(1, len(MIGRATIONS)))
async def test_database_at_an_earlier_version_is_migrated_keeping_its_jobs(tmp_path, start):
    """A database left at an earlier version is brought up to date; its jobs are still there, a running one reruns."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path, migrations_dir=migrations_dir_with(tmp_path, MIGRATIONS[:start])):
        pass
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # a job as the older bot wrote it (columns of 0001)
        job_id = db.execute(
            "INSERT INTO jobs (kind, status, user_id, guild_id, channel_id, recipe, created_at, started_at, start_seq)"
            " VALUES ('imagine', 'running', 7, 1, 10, '{\"prompt\": \"a cat\"}', ?, ?, 1)", (T0, T0 + 1)
        ).lastrowid
    assert user_version(path) == start

    async with await Store.open(path) as store:
        assert (await store.get_job(job_id)).recipe == {"prompt": "a cat"}
        assert [job.id for job in (await store.recover(now=T0 + 2)).queued] == [job_id]
        await store.set_limit(1, None, "max_steps", 30)  # the newest tables work too
    assert user_version(path) == len(MIGRATIONS)


def dump(path):
    """Every row of jobs and job_messages, and the jobs indexes' SQL, as plain values."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        jobs = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        columns = [column[1] for column in db.execute("PRAGMA table_info(jobs)")]
        messages = db.execute("SELECT * FROM job_messages ORDER BY message_id").fetchall()
        indexes = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
                                  " AND sql IS NOT NULL"))
    return columns, jobs, messages, indexes


async def test_a_database_at_the_0005_schema_upgrades_to_zoom_and_pan_with_its_jobs_intact(tmp_path):
    """0006 rebuilds jobs for the zoom and pan kinds: every row, column, index and reference is kept, and new kinds
    are then accepted (before, the CHECK refused them); foreign keys are enforced again afterwards."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path, migrations_dir=migrations_dir_with(tmp_path, MIGRATIONS[:5])) as store:
        grid = await queue(store, 7, interaction_token="t", token_expires_at=T0 + 900)
        await store.claim_next(now=T0 + 1)
        await store.finish_job(grid.id, images=[b"1", b"2", b"3", b"4"], grid=b"g", result={"seeds": [1, 2, 3, 4]},
                               now=T0 + 2)
        await store.set_message(grid.id, 555)
        await store.add_message(grid.id, 556, 10)  # a /show of it
        upscale = await store.admit(kind="upscale", user_id=8, guild_id=1, channel_id=10, limits=OPEN, now=T0 + 3,
                                    recipe={"prompt": "a cat", "source_job": grid.id, "source_index": 2},
                                    parent_id=grid.id)
        await store.claim_next(now=T0 + 4)
        await store.finish_job(upscale.id, images=[b"u"], grid=None, result={}, now=T0 + 5)
        await store.delete_images(upscale.id, now=T0 + 6)
        failed = await queue(store, 7, now=T0 + 7)
        await store.claim_next(now=T0 + 8)
        await store.fail_job(failed.id, "it broke", now=T0 + 9)
        await queue(store, 9, now=T0 + 10)  # still waiting
        with pytest.raises(sqlite3.IntegrityError):  # the 0005 schema knows no zoom
            await store.admit(kind="zoom", user_id=9, guild_id=1, channel_id=10, recipe={"prompt": "a cat"},
                              limits=OPEN, now=T0 + 11)
    columns, jobs, messages, indexes = dump(path)
    assert user_version(path) == 5 and len(jobs) == 4 and len(indexes) == 7

    async with await Store.open(path) as store:
        assert dump(path) == (columns, jobs, messages, indexes)  # every column in its place, every row as it was
        assert (await store.job_for_message(556)).id == grid.id
        assert (await store.get_job(upscale.id)).images_deleted_at == T0 + 6
        zoom = await store.admit(kind="zoom", user_id=9, guild_id=1, channel_id=10, limits=OPEN, now=T0 + 12,
                                 recipe={"prompt": "a cat", "zoom": 2.0}, parent_id=upscale.id)
        assert zoom.id == failed.id + 2 and zoom.kind == "zoom"
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # foreign keys are on again
            await store.add_message(999, 557, 10)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    """A database from a newer bot is refused with SchemaTooNew naming both versions, and left untouched."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")

    with pytest.raises(SchemaTooNew) as refusal:
        await Store.open(path)

    assert str(refusal.value) == (
        f"imagine.db is at schema version {len(MIGRATIONS) + 3} but this bot only knows up to {len(MIGRATIONS)}; "
        "upgrade the bot or restore a backup"
    )
    assert user_version(path) == len(MIGRATIONS) + 3


async def test_broken_migration_is_rolled_back_entirely(tmp_path):
    """A migration that fails half-way leaves none of its changes behind and the version where it was."""
    path = tmp_path / "imagine.db"
    broken = "\n".join(["-- Deliberately broken: the second statement fails.", "CREATE TABLE half (x);",
                        "INSERT INTO nowhere VALUES (1);"])
    folder = migrations_dir_with(tmp_path, MIGRATIONS, {f"{len(MIGRATIONS) + 1:04d}_broken.sql": broken})

    with pytest.raises(MigrationError, match="nowhere"):
        await Store.open(path, migrations_dir=folder)

    assert user_version(path) == len(MIGRATIONS)
    assert "half" not in tables(path)
    async with await Store.open(path) as store:  # the real migrations still open it fine
        await queue(store, user_id=1)


# --- admission --------------------------------------------------------------------------------------------------


async def admit_many(stores, attempts, limits):
    """`attempts` concurrent admissions for one user, spread over `stores`; returns (admitted, refusals)."""
    results = await asyncio.gather(
        *(queue(stores[n % len(stores)], user_id=42, limits=limits, now=T0 + n / 1000) for n in range(attempts)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, BaseException)]
    return admitted, refusals


@pytest.mark.parametrize("run", range(3))
async def test_200_concurrent_admissions_on_one_store_admit_exactly_the_limit(store, run):
    """200 simultaneous requests from one user with a limit of 5 per hour admit exactly 5; the rest are RateLimited."""
    admitted, refusals = await admit_many([store], 200, Limits(jobs_per_hour=5, max_queued=1000))

    assert len(admitted) == 5
    assert all(isinstance(r, RateLimited) for r in refusals) and len(refusals) == 195
    assert len(await store.unfinished_jobs()) == 5


@pytest.mark.parametrize("stores", [2, 3])
@pytest.mark.parametrize("run", range(3))
async def test_200_concurrent_admissions_across_stores_admit_exactly_the_limit(tmp_path, stores, run):
    """Two or three Store objects (separate connections) on one file never over-admit, and never report a lock."""
    opened = [await Store.open(tmp_path / "imagine.db") for _ in range(stores)]
    try:
        admitted, refusals = await admit_many(opened, 200, Limits(jobs_per_hour=5, max_queued=1000))
        assert len(admitted) == 5
        assert [r for r in refusals if not isinstance(r, RateLimited)] == []
        assert len(await opened[0].unfinished_jobs()) == 5
    finally:
        for store in opened:
            await store.close()


async def test_concurrent_admissions_respect_the_queued_limit(tmp_path):
    """With max_queued=2, 200 simultaneous requests over two stores queue exactly 2; the rest are TooManyQueued."""
    opened = [await Store.open(tmp_path / "imagine.db") for _ in range(2)]
    try:
        admitted, refusals = await admit_many(opened, 200, Limits(jobs_per_hour=100, max_queued=2))
        assert len(admitted) == 2
        assert all(isinstance(r, TooManyQueued) for r in refusals)
        assert str(refusals[0]) == (
            "You already have 2 jobs waiting in this channel; wait for one to finish or /cancel one."
        )
    finally:
        for store in opened:
            await store.close()


async def test_a_running_job_frees_its_queue_slot(store):
    """The queued limit counts waiting jobs only: once one starts running the user may queue another."""
    limits = Limits(max_queued=2)
    await queue(store, 1, limits=limits)
    await queue(store, 1, limits=limits)
    with pytest.raises(TooManyQueued):
        await queue(store, 1, limits=limits)
    await store.claim_next(now=T0)
    await queue(store, 1, limits=limits)


async def test_retry_at_is_exact_at_the_edge_of_the_hour(store):
    """With 2 per hour, the slot frees exactly at created_at + 3600 of the older job; a second earlier is refused."""
    limits = Limits(jobs_per_hour=2, max_queued=10)
    await queue(store, 1, limits=limits, now=T0)
    await queue(store, 1, limits=limits, now=T0 + 600)

    with pytest.raises(RateLimited) as refusal:
        await queue(store, 1, limits=limits, now=T0 + 3599)
    assert refusal.value.retry_at == T0 + 3600
    assert str(refusal.value) == (
        f"You've used your 2 requests per hour in this channel. Try again <t:{int(T0) + 3600}:R>."
    )

    await queue(store, 1, limits=limits, now=T0 + 3600)
    with pytest.raises(RateLimited) as refusal:  # now the T0+600 and T0+3600 jobs fill the window
        await queue(store, 1, limits=limits, now=T0 + 3601)
    assert refusal.value.retry_at == T0 + 600 + 3600


def around_the_admitting_insert(store, before, after=None):
    """Make `store.admit` run `before()` just before its check-and-insert statement and `after(row)` just after it,
    once: requests on another connection that land between the lock-free pre-check and the insert, or after it."""
    write_statement = store._write_statement
    calls = []

    async def racing(sql, parameters=()):
        if calls:
            return await write_statement(sql, parameters)
        calls.append(sql)
        await before()
        row = await write_statement(sql, parameters)
        if after is not None:
            await after(row)
        return row

    store._write_statement = racing
    return calls


async def test_a_slot_taken_after_the_pre_check_is_refused_with_the_exact_retry_at(tmp_path):
    """When another connection takes the last slot after the pre-check passed, the insert refuses, and the refusal
    names the same exact retry_at as if the request had been checked after it."""
    limits = Limits(jobs_per_hour=2, max_queued=10)
    store, other = [await Store.open(tmp_path / "imagine.db") for _ in range(2)]
    try:
        await queue(store, 1, limits=limits, now=T0)
        calls = around_the_admitting_insert(store, lambda: queue(other, 1, limits=limits, now=T0 + 600))
        with pytest.raises(RateLimited) as refusal:
            await queue(store, 1, limits=limits, now=T0 + 3599)
        assert calls, "the pre-check should have let the request through to the insert"
        assert refusal.value.retry_at == T0 + 3600
        assert len(await store.unfinished_jobs()) == 2
    finally:
        await store.close()
        await other.close()


async def test_a_slot_freed_again_after_a_lost_race_admits(tmp_path):
    """If the last queue slot is taken after the pre-check but frees up again (the job started) before the refusal
    is read, the request is decided again and admitted."""
    limits = Limits(jobs_per_hour=10, max_queued=1)
    store, other = [await Store.open(tmp_path / "imagine.db") for _ in range(2)]
    try:
        taken = []

        async def take_the_slot():
            taken.append(await queue(other, 1, limits=limits, now=T0))

        async def start_it(row):
            assert row is None  # the insert lost the race
            assert (await other.claim_next(now=T0)).id == taken[0].id

        calls = around_the_admitting_insert(store, take_the_slot, start_it)
        job = await queue(store, 1, limits=limits, now=T0 + 1)
        assert calls
        assert [(j.id, j.status) for j in await store.unfinished_jobs()] == [
            (taken[0].id, "running"), (job.id, "queued")]
        with pytest.raises(TooManyQueued):
            await queue(other, 1, limits=limits, now=T0 + 2)
    finally:
        await store.close()
        await other.close()


async def test_hourly_limit_is_per_channel(store):
    """Using up the hourly limit in one channel does not refuse the same user in another channel."""
    limits = Limits(jobs_per_hour=1)
    await queue(store, 1, channel_id=10, limits=limits)
    with pytest.raises(RateLimited):
        await queue(store, 1, channel_id=10, limits=limits, now=T0 + 1)
    await queue(store, 1, channel_id=11, limits=limits, now=T0 + 1)


async def test_failed_jobs_do_not_count_against_the_hourly_limit(store):
    """A job that failed gives its hourly slot back; a cancelled one does not."""
    limits = Limits(jobs_per_hour=1)
    job = await queue(store, 1, limits=limits)
    await store.fail_job(job.id, "CUDA out of memory", now=T0 + 1)
    job = await queue(store, 1, limits=limits, now=T0 + 2)
    await store.cancel_job(job.id, now=T0 + 3)
    with pytest.raises(RateLimited):
        await queue(store, 1, limits=limits, now=T0 + 4)


async def test_disabled_channel_refuses_with_a_sentence(store):
    """A channel with the bot disabled refuses every request with a UserError."""
    with pytest.raises(UserError, match="turned off"):
        await queue(store, 1, limits=Limits(enabled=False))


async def test_button_job_records_its_parent_and_a_missing_parent_is_refused(store):
    """A job made from a button points at its parent; a parent that does not exist raises JobNotFound."""
    parent = await queue(store, 1)
    child = await store.admit(kind="upscale", user_id=1, guild_id=1, channel_id=10, recipe={"index": 2},
                              limits=OPEN, parent_id=parent.id, interaction_token="s3cret", token_expires_at=T0 + 900,
                              now=T0)
    assert (child.kind, child.parent_id, child.interaction_token, child.token_expires_at) == (
        "upscale", parent.id, "s3cret", T0 + 900)
    assert "s3cret" not in repr(child)
    with pytest.raises(JobNotFound):
        await store.admit(kind="variation", user_id=1, guild_id=1, channel_id=10, recipe={}, limits=OPEN,
                          parent_id=999)


# --- the queue --------------------------------------------------------------------------------------------------


async def test_fair_order_round_robins_users_and_positions_predict_it(store):
    """A has 5 jobs, B 2, C 1, queued in that order: they run A B C A B A A A, as queue_position said beforehand."""
    jobs = {}
    for user, count in (("A", 5), ("B", 2), ("C", 1)):
        for _ in range(count):
            job = await queue(store, ord(user))
            jobs[job.id] = user
    positions = {job_id: await store.queue_position(job_id) for job_id in jobs}
    predicted = sorted(jobs, key=positions.get)
    assert sorted(positions.values()) == list(range(1, 9))

    claimed = []
    for n in range(len(jobs)):
        job = await store.claim_next(now=T0 + n)
        assert await store.queue_position(job.id) == 0
        claimed.append(job.id)
        await store.finish_job(job.id, images=[], grid=None, result={}, now=T0 + n + 0.5)
    assert await store.claim_next(now=T0 + 100) is None

    assert "".join(jobs[job_id] for job_id in claimed) == "ABCABAAA"
    assert claimed == predicted


async def test_user_who_waited_longest_since_their_last_job_goes_first(store):
    """Among users who have run before, the one whose last job started longest ago goes first; newcomers before both."""
    for user in (1, 2):
        await queue(store, user)
        await store.claim_next(now=T0 + user)  # user 1 started at T0+1, user 2 at T0+2
    late_2 = await queue(store, 2, now=T0 + 10)  # user 2 queues first this time...
    late_1 = await queue(store, 1, now=T0 + 11)
    newcomer = await queue(store, 3, now=T0 + 12)

    assert [(await store.claim_next(now=T0 + 20 + n)).id for n in range(3)] == [newcomer.id, late_1.id, late_2.id]


async def test_claim_batch_takes_the_head_and_the_companions_its_plan_picks_in_one_turn_each(store):
    """claim_batch runs the head of the fair queue and the companions the batch plan picks (from the window it is
    shown), each taking its turn; the rest keep true positions; a plan naming no job of the window runs the head."""
    from engine import batching

    def recipe(width):
        return {"prompt": "a cat", "width": width, "height": 64, "steps": 4, "guidance": 7.0, "seeds": [1, 2, 3, 4]}

    def plan(queue):
        return batching.plan([batching.Candidate(job.id, job.user_id, batching.recipe_key(job.kind, job.recipe))
                              for job in queue], 3)

    a1 = await queue(store, 1, recipe=recipe(64))
    a2 = await queue(store, 1, recipe=recipe(64))
    b = await queue(store, 2, recipe=recipe(128))
    c = await queue(store, 3, recipe=recipe(64))
    d = await queue(store, 4, recipe=recipe(64))
    e = await queue(store, 5, recipe=recipe(64))

    claimed = await store.claim_batch(plan, window=1 + batching.WINDOW, now=T0)

    assert [job.id for job in claimed] == [a1.id, c.id, d.id]
    assert {job.status for job in claimed} == {"running"} and {job.started_at for job in claimed} == {T0}
    assert [await store.queue_position(job.id) for job in (b, e, a2)] == [1, 2, 3]
    assert [job.id for job in await store.unfinished_jobs()][3:] == [b.id, e.id, a2.id]
    shown_only_the_head = await store.claim_batch(lambda queue: [a2.id, e.id], window=1, now=T0 + 1)
    assert [job.id for job in shown_only_the_head] == [b.id]
    assert [job.id for job in await store.claim_batch(lambda queue: [], window=5, now=T0 + 2)] == [e.id]


async def test_a_plan_may_run_a_job_of_the_window_first_and_the_job_passed_over_keeps_the_front(store):
    """A plan that puts a later job of the window first (its model is loaded) claims it; the head it passed over is
    still first in line, with its position, and runs on the next claim."""
    head = await queue(store, 1)
    behind = await queue(store, 2)
    last = await queue(store, 3)

    claimed = await store.claim_batch(lambda queue: [queue[1].id], window=3, now=T0)

    assert [job.id for job in claimed] == [behind.id]
    assert [await store.queue_position(job.id) for job in (head, last)] == [1, 2]
    assert (await store.claim_next(now=T0 + 1)).id == head.id


async def test_every_job_of_a_claimed_batch_counts_an_attempt_and_two_crashes_fail_them_all(tmp_path):
    """Companions claimed with the head count their attempts too: a batch two restarts cut short fails as a whole."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path) as store:
        head, companion = await queue(store, 1, now=T0), await queue(store, 2, now=T0 + 1)
        claimed = await store.claim_batch(lambda waiting: [head.id, companion.id], window=2, now=T0 + 2)
        assert [(job.id, job.attempts) for job in claimed] == [(head.id, 1), (companion.id, 1)]
    async with await Store.open(path) as store:
        assert [job.id for job in (await store.recover(now=T0 + 3)).queued] == [head.id, companion.id]
        await store.claim_batch(lambda waiting: [head.id, companion.id], window=2, now=T0 + 4)
    async with await Store.open(path) as store:
        recovered = await store.recover(now=T0 + 5)
        assert (recovered.queued, {job.id for job in recovered.failed}) == ([], {head.id, companion.id})


@pytest.mark.parametrize("seed", range(5))
async def test_queue_position_always_agrees_with_claim_order(store, seed):
    """Under random arrivals, claims, cancels and a restart, claim_next always takes the job at position 1."""
    rng = random.Random(seed)
    now = T0
    for _ in range(120):
        now += 1
        action = rng.random()
        if action < 0.5:
            await queue(store, rng.randint(1, 5), now=now)
        elif action < 0.9:
            waiting = [job for job in await store.unfinished_jobs() if job.status == "queued"]
            positions = {job.id: await store.queue_position(job.id) for job in waiting}
            assert sorted(positions.values()) == list(range(1, len(waiting) + 1))
            job = await store.claim_next(now=now)
            assert (job and positions[job.id]) == (1 if waiting else None)
            if job and rng.random() < 0.7:
                await store.finish_job(job.id, images=[], grid=None, result={}, now=now)
        elif action < 0.95:
            waiting = await store.unfinished_jobs()
            if waiting:
                await store.cancel_job(rng.choice(waiting).id, now=now)
        else:
            await store.recover(now=now)


async def test_queued_and_running_jobs_survive_a_restart(tmp_path):
    """Closing the database mid-job loses nothing: recover() requeues the running job ahead of the others."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path) as store:
        first = await queue(store, 1, now=T0)
        second = await queue(store, 2, now=T0 + 1)
        third = await queue(store, 1, now=T0 + 2)
        running = await store.claim_next(now=T0 + 3)
        await store.set_message(second.id, 555)
    assert running.id == first.id

    async with await Store.open(path) as store:
        newcomer = await queue(store, 3, now=T0 + 4)  # arrived during the restart, has never run anything
        recovered = (await store.recover(now=T0 + 5)).queued

        # The interrupted job first; then users who never ran (oldest job first); then user 1 again.
        expected = [first.id, second.id, newcomer.id, third.id]
        assert [job.id for job in recovered] == expected
        assert all(job.status == "queued" and job.started_at is None for job in recovered)
        assert recovered[1].message_id == 555
        assert [await store.queue_position(job_id) for job_id in expected] == [1, 2, 3, 4]
        assert [(await store.claim_next(now=T0 + 6 + n)).id for n in range(4)] == expected


async def test_a_job_interrupted_twice_fails_and_the_next_job_runs(tmp_path):
    """A job cut short by two restarts is not run a third time: recover() fails it with a sentence, the rest go on."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path) as store:
        poison = await queue(store, 1, now=T0)
        other = await queue(store, 2, now=T0 + 1)
        assert (await store.claim_next(now=T0 + 2)).attempts == 1
    async with await Store.open(path) as store:  # first restart: it runs again, first
        first = await store.recover(now=T0 + 3)
        assert ([job.id for job in first.queued], first.failed) == ([poison.id, other.id], [])
        assert (await store.claim_next(now=T0 + 4)).id == poison.id
    async with await Store.open(path) as store:  # second restart: given up
        second = await store.recover(now=T0 + 5)
        assert [job.id for job in second.queued] == [other.id]
        assert [(job.id, job.status, job.error, job.finished_at) for job in second.failed] == [
            (poison.id, "failed", INTERRUPTED_TOO_OFTEN, T0 + 5)
        ]
        assert (await store.get_job(poison.id)).status == "failed"
        assert (await store.claim_next(now=T0 + 6)).id == other.id
        assert (await store.recover(now=T0 + 7)).failed == []  # failed once, shown once


async def test_a_job_whose_worker_went_away_runs_next_and_fails_after_two_lost_runs(store):
    """A job lost by its worker (a Ray replica killed) runs next, before older jobs of others, and after its second
    lost run fails with a sentence instead of running a third time."""
    lost = await queue(store, 1, now=T0)
    other = await queue(store, 2, now=T0 + 1)
    assert (await store.claim_next(now=T0 + 2)).id == lost.id

    requeued = await store.requeue_lost(lost.id, now=T0 + 3)

    assert (requeued.status, requeued.error, requeued.started_at) == ("queued", None, None)
    assert await store.queue_position(lost.id) == 1 and await store.queue_position(other.id) == 2
    assert (await store.claim_next(now=T0 + 4)).id == lost.id
    failed = await store.requeue_lost(lost.id, now=T0 + 5)
    assert (failed.status, failed.error, failed.finished_at, failed.attempts) == ("failed", LOST_TOO_OFTEN, T0 + 5, 2)
    assert (await store.claim_next(now=T0 + 6)).id == other.id


async def test_a_job_lost_because_the_cluster_was_unreachable_is_never_given_up(store):
    """Runs cut short because the Ray cluster couldn't be reached don't count as attempts: the job stays first in
    line however often it happens, and its attempts stay as they were."""
    job = await queue(store, 1, now=T0)
    for n in range(3):
        assert (await store.claim_next(now=T0 + 1 + 2 * n)).id == job.id
        requeued = await store.requeue_lost(job.id, now=T0 + 2 + 2 * n, counted=False)
        assert (requeued.status, requeued.attempts) == ("queued", 0)


async def test_attempts_count_only_runs_that_a_restart_cut_short(tmp_path):
    """A job that finished, or one interrupted only once, is never failed by a later restart."""
    path = tmp_path / "imagine.db"
    async with await Store.open(path) as store:
        done = await queue(store, 1, now=T0)
        await store.claim_next(now=T0)
        await store.finish_job(done.id, images=[], grid=None, result={}, now=T0 + 1)
        once = await queue(store, 2, now=T0 + 2)
        await store.claim_next(now=T0 + 3)
    async with await Store.open(path) as store:
        recovered = await store.recover(now=T0 + 4)
        assert ([job.id for job in recovered.queued], recovered.failed) == ([once.id], [])
        assert (await store.get_job(done.id)).status == "done"
        rerun = await store.claim_next(now=T0 + 5)
        assert (rerun.id, rerun.attempts) == (once.id, 2)
        assert (await store.finish_job(once.id, images=[], grid=None, result={}, now=T0 + 6)).status == "done"
    async with await Store.open(path) as store:
        assert await store.recover(now=T0 + 7) == type(recovered)(queued=[], failed=[])


async def test_cancel_only_stops_waiting_or_running_jobs(store):
    """Queued and running jobs can be cancelled; a finished or unknown job gives None."""
    queued = await queue(store, 1)
    running = await queue(store, 2)
    assert (await store.claim_next(now=T0)).id == queued.id
    assert (await store.cancel_job(queued.id, now=T0 + 1)).status == "cancelled"
    assert (await store.cancel_job(running.id)).status == "cancelled"
    assert await store.cancel_job(running.id) is None
    assert await store.cancel_job(12345) is None
    assert await store.queue_position(running.id) is None
    assert await store.claim_next() is None


async def test_user_jobs_lists_running_then_queued_with_positions(store):
    """/queue shows a user's running job at position 0 and their queued jobs at their queue positions."""
    a1 = await queue(store, 1)
    b1 = await queue(store, 2)
    a2 = await queue(store, 1)
    await store.admit(kind="imagine", user_id=1, guild_id=99, channel_id=5, recipe={}, limits=OPEN, now=T0)
    await store.claim_next(now=T0)

    assert [(job.id, position) for job, position in await store.user_jobs(1, 1)] == [(a1.id, 0), (a2.id, 2)]
    assert [(job.id, position) for job, position in await store.user_jobs(2, 1)] == [(b1.id, 1)]


async def test_failing_a_job_records_the_error(store):
    """fail_job marks the job failed with its error and end time; failing it again changes nothing."""
    job = await queue(store, 1)
    await store.claim_next(now=T0)
    failed = await store.fail_job(job.id, "the engine crashed", now=T0 + 5)
    assert (failed.status, failed.error, failed.finished_at) == ("failed", "the engine crashed", T0 + 5)
    assert (await store.fail_job(job.id, "again", now=T0 + 6)).error == "the engine crashed"
    with pytest.raises(JobNotFound):
        await store.fail_job(999, "nope")


# --- images -----------------------------------------------------------------------------------------------------


async def test_finished_job_images_are_written_read_and_pruned(tmp_path):
    """finish_job writes 1..n.png and grid.png; after pruning, the files are gone and reading raises ImagesGone."""
    images_dir = tmp_path / "pictures"
    async with await Store.open(tmp_path / "imagine.db", images_dir=images_dir) as store:
        old = await queue(store, 1)
        recent = await queue(store, 2)
        await store.claim_next(now=T0)
        await store.claim_next(now=T0)
        done = await store.finish_job(old.id, images=[b"png1", b"png2"], grid=b"grid", result={"seeds": [1, 2]},
                                      now=T0 + 10)
        await store.finish_job(recent.id, images=[b"x"], grid=None, result={}, now=T0 + 5 * 86400)

        assert (done.status, done.result, done.image_count, done.finished_at) == ("done", {"seeds": [1, 2]}, 2, T0 + 10)
        assert sorted(p.name for p in (images_dir / str(old.id)).iterdir()) == ["1.png", "2.png", "grid.png"]
        assert await store.image(old.id, 2) == b"png2"
        assert await store.grid(old.id) == b"grid"
        with pytest.raises(ValueError):
            await store.image(old.id, 3)

        assert await store.prune_images(older_than_days=3, now=T0 + 6 * 86400) == 1

        assert not (images_dir / str(old.id)).exists()
        assert (await store.get_job(old.id)).image_count == 0 and (await store.get_job(old.id)).images_pruned
        with pytest.raises(ImagesGone, match="cleaned up after 3 days"):
            await store.image(old.id, 1)
        with pytest.raises(ImagesGone):
            await store.grid(old.id)
        assert await store.image(recent.id, 1) == b"x"
        assert await store.prune_images(older_than_days=3, now=T0 + 6 * 86400) == 0
        with pytest.raises(JobNotFound):
            await store.image(999, 1)


async def test_missing_image_files_raise_images_gone(store):
    """If someone deleted a job's files by hand, reading them raises ImagesGone rather than a file error."""
    job = await queue(store, 1)
    await store.claim_next(now=T0)
    await store.finish_job(job.id, images=[b"a"], grid=b"g", result={}, now=T0)
    shutil.rmtree(store.images_dir / str(job.id))
    with pytest.raises(ImagesGone):
        await store.image(job.id, 1)


async def test_images_of_a_job_cancelled_while_running_are_not_kept(store):
    """A job cancelled while it ran stays cancelled when the engine finishes it, and no files are left."""
    job = await queue(store, 1)
    await store.claim_next(now=T0)
    await store.cancel_job(job.id)
    finished = await store.finish_job(job.id, images=[b"a"], grid=b"g", result={}, now=T0)
    assert finished.status == "cancelled"
    assert not (store.images_dir / str(job.id)).exists()


# --- settings ---------------------------------------------------------------------------------------------------


async def test_limits_precedence_is_defaults_then_server_then_channel(store):
    """A channel setting beats the server default, which beats the built-in default; resets fall back a level."""
    assert await store.limits_for(1, 10) == Limits()
    await store.set_limit(1, None, "jobs_per_hour", 5)
    await store.set_limit(1, None, "max_steps", 30)
    await store.set_limit(1, 10, "jobs_per_hour", 3)
    await store.set_limit(1, 10, "nsfw_allowed", True)

    assert await store.limits_for(1, 10) == Limits(jobs_per_hour=3, max_steps=30, nsfw_allowed=True)
    assert await store.limits_for(1, 11) == Limits(jobs_per_hour=5, max_steps=30)
    assert await store.limits_for(2, 10) == Limits()
    shown = await store.limit_overrides(1, 10)
    assert shown["jobs_per_hour"] == (3, "channel")
    assert shown["max_steps"] == (30, "server")
    assert shown["max_side"] == (1024, "default")

    assert await store.reset_limits(1, 10, "jobs_per_hour") == 1
    assert (await store.limits_for(1, 10)).jobs_per_hour == 5
    assert await store.reset_limits(1, None) == 2
    assert await store.limits_for(1, 10) == Limits(nsfw_allowed=True)
    assert await store.reset_limits(1, 10) == 1
    assert await store.limits_for(1, 10) == Limits()


async def test_limit_values_are_validated_with_readable_sentences(store):
    """Unknown keys, wrong types and out-of-range values are refused as InvalidLimit; text values are parsed."""
    for key, value, message in [
        ("speed", 1, "There is no limit called 'speed'"),
        ("max_steps", 0, "'max_steps' must be from 1 to 150, got 0."),
        ("max_steps", "many", "'max_steps' must be a whole number from 1 to 150, got 'many'."),
        ("max_side", True, "'max_side' must be a whole number"),
        ("enabled", 2, "'enabled' is on or off (true/false), got '2'."),
        ("model", "two words", "'model' is a model's name"),
        ("model", 3, "'model' is a model's name"),
    ]:
        with pytest.raises(InvalidLimit) as refusal:
            await store.set_limit(1, 10, key, value)
        assert str(refusal.value).startswith(message)
        assert isinstance(refusal.value, UserError) and isinstance(refusal.value, ValueError)
    with pytest.raises(InvalidLimit):
        await store.reset_limits(1, 10, "speed")

    await store.set_limit(1, 10, "enabled", "off")
    await store.set_limit(1, 10, "max_side", " 768 ")
    assert await store.limits_for(1, 10) == Limits(enabled=False, max_side=768)


async def test_a_default_model_is_kept_per_channel_over_the_servers(store):
    """/limits set model: a channel's default model beats the server's; the name is kept lower-case; reset removes."""
    await store.set_limit(1, None, "model", "Turbo")
    await store.set_limit(1, 10, "model", "sd15")
    assert (await store.limits_for(1, 10)).model == "sd15"
    assert (await store.limits_for(1, 11)).model == "turbo"
    assert (await store.limit_overrides(1, 11))["model"] == ("turbo", "server")
    assert (await store.limits_for(2, 10)).model is None
    assert await store.reset_limits(1, 10, "model") == 1
    assert (await store.limits_for(1, 10)).model == "turbo"


async def test_the_default_model_migration_keeps_every_limit(tmp_path):
    """A database at 0006 with limits set opens at the latest version with the same limits, and takes a model."""
    path = tmp_path / "imagine.db"
    before = [m for m in MIGRATIONS if int(m.name[:4]) < 7]
    async with await Store.open(path, migrations_dir=migrations_dir_with(tmp_path, before)) as store:
        await store.set_limit(1, None, "max_steps", 30)
        await store.set_limit(1, 10, "nsfw_allowed", True)
        with pytest.raises(sqlite3.IntegrityError):  # the old table had no room for a model
            await store.set_limit(1, 10, "model", "turbo")
    async with await Store.open(path) as store:
        assert await store.limits_for(1, 10) == Limits(max_steps=30, nsfw_allowed=True)
        await store.set_limit(1, 10, "model", "turbo")
        assert await store.limits_for(1, 10) == Limits(max_steps=30, nsfw_allowed=True, model="turbo")


async def test_banned_words_are_normalised_and_per_server(store):
    """Banned words are stored lower-case and single-spaced, once per server, and can be removed."""
    assert await store.add_banned_word(1, "  Gore ") is True
    assert await store.add_banned_word(1, "gore") is False
    assert await store.add_banned_word(1, "Blood   Bath") is True
    assert await store.banned_words(1) == ["blood bath", "gore"]
    assert await store.banned_words(2) == []
    with pytest.raises(UserError):
        await store.add_banned_word(1, "   ")

    assert await store.remove_banned_word(1, "GORE") is True
    assert await store.remove_banned_word(1, "gore") is False
    assert await store.banned_words(1) == ["blood bath"]


async def test_meta_values_persist_across_reopen(tmp_path):
    """set_meta stores a small value (e.g. the synced command tree hash) that survives reopening."""
    async with await Store.open(tmp_path / "imagine.db") as store:
        assert await store.get_meta("command_tree_hash") is None
        await store.set_meta("command_tree_hash", "abc")
        await store.set_meta("command_tree_hash", "def")
    async with await Store.open(tmp_path / "imagine.db") as store:
        assert await store.get_meta("command_tree_hash") == "def"


async def test_store_imports_neither_discord_nor_torch_nor_engine():
    """The store package (every module of bot/store/) depends on aiosqlite and the errors module only."""
    modules = sorted((Path(__file__).parents[2] / "bot" / "store").glob("*.py"))
    assert modules
    for module in modules:
        source = module.read_text()
        for name in ("discord", "torch", "engine"):
            assert f"import {name}" not in source and f"from {name}" not in source, module.name


# --- member preferences -----------------------------------------------------------------------------------------


async def test_preferences_are_per_member_and_server_and_a_change_keeps_the_others(store):
    """Defaults until set; changing one preference keeps the rest; another server or member is untouched."""
    assert await store.preferences(1, 10) == Preferences()
    await store.set_preferences(1, 10, remix=True, suffix="--no text")
    changed = await store.set_preferences(1, 10, aspect="16:9")
    assert changed == Preferences(remix=True, aspect="16:9", suffix="--no text") == await store.preferences(1, 10)
    assert await store.preferences(2, 10) == Preferences() == await store.preferences(1, 11)
    assert await store.preferences(None, 10) == Preferences()  # direct messages keep no preferences
    reset = await store.reset_preferences(1, 10, ("remix", "aspect"))
    assert reset == Preferences(suffix="--no text")
    with pytest.raises(ValueError, match="'strong' or 'subtle'"):
        await store.set_preferences(1, 10, variation="wild")


async def test_a_prompt_picture_goes_with_the_last_job_that_needs_it(tmp_path):
    """An image prompt's picture stays while a job naming it is queued, or done with its images kept; deleting the
    first job's images (❌) keeps it for its 🔄, deleting the 🔄's too removes it, and pruning removes the pictures
    of pruned jobs and old pictures no job names (a refused prompt's), but not one kept a moment ago."""
    images_dir = tmp_path / "pictures"
    async with await Store.open(tmp_path / "imagine.db", images_dir=images_dir) as store:
        key = await store.save_prompt_image(b"fox picture")
        first = await queue(store, 1, recipe={"prompt": "a fox", "image_prompt": key})
        reroll = await queue(store, 2, recipe={"prompt": "a fox", "image_prompt": key})
        picture = images_dir / "prompts" / f"{key}.png"
        for job in (first, reroll):
            await store.claim_next(now=T0)
            await store.finish_job(job.id, images=[b"a"], grid=None, result={}, now=T0)

        await store.delete_images(first.id, now=T0 + 10)
        assert picture.read_bytes() == b"fox picture"  # the reroll's 🔄 still starts from it
        await store.delete_images(reroll.id, now=T0 + 20)
        assert not picture.exists()

        kept = await store.save_prompt_image(b"owl picture")
        old = await queue(store, 3, recipe={"prompt": "an owl", "image_prompt": kept})
        await store.claim_next(now=T0)
        await store.finish_job(old.id, images=[b"a"], grid=None, result={}, now=T0)
        orphan = await store.save_prompt_image(b"refused picture")
        fresh = await store.save_prompt_image(b"just kept")
        os.utime(images_dir / "prompts" / f"{orphan}.png", (T0, T0))
        os.utime(images_dir / "prompts" / f"{kept}.png", (T0, T0))
        os.utime(images_dir / "prompts" / f"{fresh}.png", (T0 + 4 * 86400, T0 + 4 * 86400))

        assert await store.prune_images(older_than_days=3, now=T0 + 4 * 86400) == 1

        assert sorted(path.stem for path in (images_dir / "prompts").glob("*.png")) == [fresh]
