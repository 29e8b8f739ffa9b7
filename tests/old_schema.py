"""Turn a file written by this actorflow into what an older version wrote, to test
that opening it migrates it in place."""

from __future__ import annotations

import sqlite3

from actorflow.records import RECORD_ENCODER
from actorflow.store import layout
from actorflow.store.sqlite import stored_rows


def make_version_4(conn: sqlite3.Connection) -> None:
    """Fold each instance's journal into its stored snapshot (a version-4 file holds
    whole snapshots), then drop what schema version 5 (the journal) added."""
    whole = [
        (RECORD_ENCODER.encode(layout.restore(base, tail)), wf)
        for wf, (base, tail) in stored_rows(conn).items()
    ]
    conn.execute("ALTER TABLE snapshots ADD COLUMN snapshot BLOB NOT NULL DEFAULT x''")
    conn.executemany("UPDATE snapshots SET snapshot = ? WHERE id = ?", whole)
    conn.execute("DROP TABLE journal")
    conn.execute("DROP TABLE bases")
    for column in ("head", "run", "base_bytes", "tail_bytes"):
        conn.execute(f"ALTER TABLE snapshots DROP COLUMN {column}")
    conn.execute("PRAGMA user_version=4")


def make_version_3(conn: sqlite3.Connection) -> None:
    """Drop what schema versions 4 (passivation) and 5 added."""
    make_version_4(conn)
    for index in ("snapshots_by_state", "snapshots_wake", "snapshots_queries"):
        conn.execute(f"DROP INDEX {index}")
    for table in ("tokens", "topics"):
        conn.execute(f"DROP TABLE {table}")
    for column in ("state", "wake", "queries"):
        conn.execute(f"ALTER TABLE snapshots DROP COLUMN {column}")
    conn.execute("PRAGMA user_version=3")


def make_version_2(conn: sqlite3.Connection) -> None:
    """Drop what schema versions 3 (retention indexes) and later added."""
    make_version_3(conn)
    conn.execute("DROP INDEX snapshots_finished")
    conn.execute("DROP INDEX inbox_decided")
    conn.execute("PRAGMA user_version=2")


def make_version_1(conn: sqlite3.Connection) -> None:
    """Drop what schema versions 2 (the inbox) and later added."""
    make_version_2(conn)
    conn.execute("DROP TABLE inbox")
    conn.execute("PRAGMA user_version=1")
