"""The numbered SQL migrations; installed as the package `bot.migrations` so that bot/store/migrations.py reads them
with importlib.resources from a wheel too. Plain .sql files only: see bot/store/migrations.py for how they are
applied."""
