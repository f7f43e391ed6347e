"""Persistence: the store interface and its choice (`base`), SQLite and
PostgreSQL backends, the shared control-plane SQL, rollups and insights
queries, migrations."""
