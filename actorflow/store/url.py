"""Database URLs: which store a ``Runtime`` target names, and how to show one safely."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")
"""URL schemes that select the PostgreSQL store (DESIGN §3.4)."""


def is_postgres_url(target: str | os.PathLike[str] | None) -> bool:
    """Whether ``target`` is a ``postgresql://`` (or ``postgres://``) URL, not a path."""
    if not isinstance(target, str):
        return False
    scheme, sep, _ = target.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def redact(url: str) -> str:
    """``url`` with its password (if any, in the authority or the query) replaced by
    ``***``: what logs, errors and reprs show. One that does not parse shows its scheme."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + "://…"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc, query=_redact_query(parts.query)))


def _redact_query(query: str) -> str:
    kept = []
    for item in query.split("&") if query else []:
        key, sep, _ = item.partition("=")
        kept.append(f"{key}=***" if sep and key.lower() in ("password", "sslpassword") else item)
    return "&".join(kept)


def secrets_of(url: str) -> list[str]:
    """The secrets in ``url`` (its password, from the authority or the query), to
    scrub from any text that might quote them (a driver's error message)."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        for item in parts.query.split("&") if parts.query else []:
            key, sep, value = item.partition("=")
            if sep and value and key.lower() in ("password", "sslpassword"):
                found.append(value)
    except ValueError:
        pass
    # As written and as decoded (``%40`` for ``@``): a driver quotes the decoded one.
    return [s for secret in found for s in dict.fromkeys([secret, unquote(secret)])]


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` in it replaced by ``***``."""
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text
