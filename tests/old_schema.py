"""Turn a file written by this actorflow into what an older version wrote, to test
that opening it migrates it in place."""

from __future__ import annotations

import sqlite3


def make_version_3(conn: sqlite3.Connection) -> None:
    """Drop what schema version 4 (passivation) added."""
    for index in ("snapshots_by_state", "snapshots_wake", "snapshots_queries"):
        conn.execute(f"DROP INDEX {index}")
    for table in ("tokens", "topics"):
        conn.execute(f"DROP TABLE {table}")
    for column in ("state", "wake", "queries"):
        conn.execute(f"ALTER TABLE snapshots DROP COLUMN {column}")
    conn.execute("PRAGMA user_version=3")


def make_version_2(conn: sqlite3.Connection) -> None:
    """Drop what schema versions 3 (retention indexes) and 4 added."""
    make_version_3(conn)
    conn.execute("DROP INDEX snapshots_finished")
    conn.execute("DROP INDEX inbox_decided")
    conn.execute("PRAGMA user_version=2")


def make_version_1(conn: sqlite3.Connection) -> None:
    """Drop what schema versions 2 (the inbox) and later added."""
    make_version_2(conn)
    conn.execute("DROP TABLE inbox")
    conn.execute("PRAGMA user_version=1")
