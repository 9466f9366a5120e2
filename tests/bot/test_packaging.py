"""An installed bot (a wheel, as `pip install .` or pipx make) carries its database schema like a checkout does."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(path.name for path in (REPO / "migrations").glob("*.sql"))
SLOW = 120


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel --no-deps .` builds, from a copy of the sources (the build writes next to them)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("bot", "engine", "migrations"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", out,
         source],
        check=True, timeout=SLOW,
    )
    (built,) = out.glob("imagine_bot-*.whl")
    return built


def installed(wheel: Path, folder: Path) -> Path:
    """The wheel's contents unpacked as pip would put them in site-packages."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def without_checkout(site: Path | str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a Python that imports the bot from `site` and its dependencies from where this one
    finds them, never from a checkout: no sys.path entry holding a bot/ folder, and -S so that no .pth file runs an
    editable install's finder (it maps bot.migrations to the checkout and would cover for what the wheel lacks)."""
    libraries = [entry for entry in sys.path if entry and Path(entry).is_dir() and not (Path(entry) / "bot").is_dir()]
    return [sys.executable, "-S"], os.environ | {"PYTHONPATH": os.pathsep.join([str(site), *libraries])}


def test_the_wheel_ships_every_module_and_migration(wheel):
    """The wheel holds every module of bot/ and engine/, and the SQL migrations as bot/migrations/*.sql."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPO)) for folder in ("bot", "engine") for path in (REPO / folder).rglob("*.py")}

    assert MIGRATIONS and {f"bot/migrations/{name}" for name in MIGRATIONS} <= names
    assert modules <= names, f"not in the wheel (list them in pyproject.toml packages): {sorted(modules - names)}"


@pytest.mark.parametrize("how", ["unpacked", "zipped"])
def test_a_store_opened_from_the_installed_wheel_gets_the_latest_schema(wheel, tmp_path, how):
    """Store.open in the package as pip installs it (unpacked) or as a zipapp runs it (the zip on sys.path), not the
    checkout, creates the database at the latest schema version."""
    site = installed(wheel, tmp_path / "site-packages") if how == "unpacked" else wheel
    script = (
        "import asyncio, sqlite3, bot.store as s\n"
        "async def main():\n"
        "    async with await s.Store.open('imagine.db'):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(s.__file__)\n"
        "print(sqlite3.connect('imagine.db').execute('PRAGMA user_version').fetchone()[0])\n"
    )
    python, env = without_checkout(site)
    run = subprocess.run([*python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SLOW)

    assert run.returncode == 0, run.stderr
    module, version = run.stdout.split()
    assert Path(module).is_relative_to(site)
    assert int(version) == len(MIGRATIONS)


async def test_a_bot_installed_without_its_migrations_refuses_to_start_with_one_line(wheel, tmp_path, bot_env):
    """`python -m bot` from an install that lost its SQL files exits at once with one readable line, no database."""
    site = installed(wheel, tmp_path / "site-packages")
    shutil.rmtree(site / "bot" / "migrations", ignore_errors=True)

    python, env = without_checkout(site)
    process = await asyncio.create_subprocess_exec(
        *python, "-m", "bot", cwd=site, env=env | bot_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)  # it needs neither torch nor Discord
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the bot started without its migrations") from None

    lines = stderr.decode().splitlines()
    assert process.returncode != 0
    assert [line for line in lines if line.startswith("imagine-bot:")] == [lines[-1]]
    assert "no database migrations found" in lines[-1] and "reinstall" in lines[-1]
    assert "Traceback" not in stderr.decode()
    assert not (Path(bot_env["DATA_DIR"]) / "imagine.db").exists()
