"""The numbered SQL migrations; installed as the package `bot.migrations` so that bot/store.py reads them with
importlib.resources from a wheel too. Plain .sql files only: see bot/store.py for how they are applied."""
