"""Persistence: the store interface and its choice (`base`), SQLite and
PostgreSQL backends with their record writes, the SQL both share (control
plane, request log, insights queries), rollups, migrations."""
