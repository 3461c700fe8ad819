"""How a URL is shown and recorded without its secrets: every message, param, tag and file
bpexp writes passes through `redact` or `redact_tree`. Nothing here imports MLflow or torch.
"""
from __future__ import annotations

import re
from typing import Any, Mapping


# A URL's start: a scheme and "://". Hydra writes an override's ":" escaped (http\://u\:pw@h):
# that form is a URL too. In text, a URL runs to whitespace or a quote.
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]*\\?://"
_URL = re.compile(_SCHEME + r"[^\s'\"]*")
# Query parameters that carry a secret (PostgreSQL's ?password=, a token in an HTTP query).
_SECRET_KEYS = (r"(?:password|passwd|pwd|pass|secret|token|access_token|api_key|apikey|sslpassword|auth"
                r"|authorization|credentials?)")
_SECRET_QUERY = re.compile(r"(?i)([?&;]" + _SECRET_KEYS + r"=)[^&#;\s'\"]*")


def redact(text: str) -> str:
    """Hide the secrets of every URL in `text`: its password (postgresql://u:secret@h/db ->
    postgresql://u:***@h/db), a token given as its user (https://TOKEN@host -> https://***@host),
    and secret query parameters (?password=x -> ?password=***); and every password `remember`
    was given, wherever it stands (one with a space or a quote ends the URL pattern early)."""
    for secret in _secrets:  # first: the URL pattern would cut such a password in two
        text = text.replace(secret, "***")
    return _URL.sub(lambda m: _redact_url(m.group(0)), text)


# Passwords read from the command line, the config and the environment (`remember`), longest
# first: shorter than MIN_SECRET they are left to the URL pattern (a one-letter password would
# star every such letter of every message).
_secrets: list[str] = []
MIN_SECRET = 4


def remember(*values) -> None:
    """Note the passwords of the URLs in these values (command-line arguments, config values),
    read to the end of each value: a password may hold spaces, quotes, "@" and "/"."""
    for value in values:
        if not isinstance(value, str) or "://" not in value:
            continue
        for start in (m.start() for m in re.finditer(_SCHEME, value)):
            rest = value[start:].split("://", 1)[1]
            userinfo, _ = split_userinfo(rest)
            found = [userinfo.partition(":")[2]] if ":" in userinfo else []
            found += re.findall(r"(?i)[?&;]" + _SECRET_KEYS + r"=([^&#;]*)", rest)
            add_secrets(*found)


def add_secrets(*secrets: str) -> None:
    """Hide these passwords in everything `redact` sees (the recorder process gets this
    process's: recorder.Recorder)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET and secret not in _secrets:
            _secrets.append(secret)
    _secrets.sort(key=len, reverse=True)


def remembered() -> list[str]:
    return list(_secrets)


def split_userinfo(rest: str) -> tuple[str, str]:
    """(user info, the rest from its "@") of what follows "://", or ("", rest).

    Users write passwords raw, with "/", "@", "?" or ":" in them, which urllib.parse splits in
    the wrong place (a "/" ends its netloc). A user name runs to the first ":", and the
    password then to an "@": the last one before the query (a "?key=" after the first "@"), so
    that a password may hold "@", "/" and "?" (u:p@ss?w0rd@h/db: SQLAlchemy would end it at the
    first "@", but the user meant "p@ss?w0rd", and none of it may be shown)."""
    user = re.match(r"[^/@:?#]*:", rest)
    first_at = rest.find("@")
    if first_at < 0:
        return "", rest
    if user:
        found = re.compile(r"\?[^=&@/?#]+=").search(rest, first_at)
        query = found.start() if found else -1
        at = rest.rfind("@", 0, query if query >= 0 else len(rest))
        return rest[:at], rest[at:]
    if not re.search(r"[/?#]", rest[:first_at]):  # user@host, no password
        return rest[:first_at], rest[first_at:]
    return "", rest


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, rest = split_userinfo(rest)
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:***"
    elif userinfo and scheme.lower().rstrip("\\") in ("http", "https"):  # a token as the user name
        userinfo = "***"
    return f"{scheme}://" + userinfo + _SECRET_QUERY.sub(r"\1***", rest)


class RedactingFilter:
    """A logging filter that hides passwords in a record's message (Hydra's log of a
    multirun's overrides: conf/hydra/hydra_logging/bpexp.yaml)."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


def redact_tree(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_tree(v) for v in obj]
    return obj
