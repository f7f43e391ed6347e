"""Lectr with every feature on, capturing to PostgreSQL instead of SQLite (a
throwaway server on loopback from `devtools.services`, fsync off as in the tests)."""

from __future__ import annotations

from benchmarks.targets import Env, Running, lectr
from devtools.services import Postgres

NAME = "lectr-pg"
DESCRIPTION = "Lectr as above, capture to PostgreSQL on loopback"


def start(env: Env) -> Running:
    pg = Postgres()
    try:
        running = lectr.start(env, name=NAME, database_url=pg.url, cleanup=pg.destroy)
    except Exception:
        pg.destroy()
        raise
    running.notes += f" ({pg.bindir.parent.name})"
    return running
