"""The connection to an Argilla server: URL and API key, a preflight check, one-line errors.

The URL and key come from flags, else from ARGILLA_API_URL / ARGILLA_API_KEY. Before any work
the server is asked for its version and for the key's user, so a server that is down or a wrong
key fails at once with one line, before anything is written. Errors of the connection while a
command runs become one line too (`argilla_errors`), with the API key masked.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from toolkit.core.errors import UserError, missing_extra, redact

log = logging.getLogger(__name__)

URL_ENV = "ARGILLA_API_URL"
KEY_ENV = "ARGILLA_API_KEY"
LOCAL_HINT = "start the local stack with `make argilla-up` and run `eval \"$(annotation/stack/argilla_stack.sh env)\"`"


@dataclass(frozen=True)
class Connection:
    api_url: str
    api_key: str
    timeout: float = 30.0

    @classmethod
    def resolve(cls, api_url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> "Connection":
        url = (api_url or os.environ.get(URL_ENV) or "").strip().rstrip("/")
        key = (api_key or os.environ.get(KEY_ENV) or "").strip()
        if not url:
            raise UserError(f"no Argilla URL; pass --api-url or set {URL_ENV} (for a local server: {LOCAL_HINT})")
        if not url.startswith(("http://", "https://")):
            raise UserError(f"Argilla URL {url!r} must start with http:// or https://; pass --api-url "
                            "http://HOST:PORT")
        if not key:
            raise UserError(f"no Argilla API key; pass --api-key or set {KEY_ENV} (the key is on your Argilla user's "
                            "settings page)")
        return cls(url, key, timeout)


def _import_argilla():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import argilla as rg
    except ImportError as e:
        raise missing_extra("argilla", e.name or "argilla") from None
    return rg


def check_server(conn: Connection) -> str:
    """Fail with one line unless the server answers and accepts the key; returns the key's username."""
    try:
        import httpx
    except ImportError:
        raise missing_extra("argilla", "httpx") from None
    try:
        with httpx.Client(base_url=conn.api_url, timeout=min(conn.timeout, 10.0)) as http:
            status = http.get("/api/v1/version")
            if status.status_code >= 500:
                raise UserError(f"the Argilla server at {conn.api_url} is not healthy (GET /api/v1/version: HTTP "
                                f"{status.status_code}); check its logs")
            if status.status_code != 200 or "json" not in status.headers.get("content-type", ""):
                raise UserError(f"{conn.api_url} does not look like an Argilla 2 server (GET /api/v1/version: HTTP "
                                f"{status.status_code}); check {URL_ENV} / --api-url")
            me = http.get("/api/v1/me", headers={"X-Argilla-Api-Key": conn.api_key})
    except httpx.TransportError as e:
        reason = _reason(e, conn)
        raise UserError(f"cannot reach the Argilla server at {conn.api_url} ({reason}); check {URL_ENV} / --api-url, "
                        f"or {LOCAL_HINT}") from None
    if me.status_code in (401, 403):
        raise UserError(f"the Argilla server at {conn.api_url} rejected the API key (HTTP {me.status_code}); check "
                        f"{KEY_ENV} / --api-key")
    if me.status_code != 200:
        raise UserError(f"the Argilla server at {conn.api_url} answered HTTP {me.status_code} for the API key's user; "
                        "check the server")
    return me.json().get("username", "?")


def connect(conn: Connection):
    """A checked `argilla.Argilla` client."""
    user = check_server(conn)
    rg = _import_argilla()
    log.info("connected to %s as %s", conn.api_url, user)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rg.Argilla(api_url=conn.api_url, api_key=conn.api_key, timeout=int(conn.timeout), retries=1)


@contextmanager
def argilla_errors(conn: Connection, doing: str) -> Iterator[None]:
    """Turn a lost connection or a refused request during `doing` into a one-line UserError.

    SDK warnings ("dataset not found", batch sizes) are silenced: the caller checks those cases.
    """
    import httpx

    from argilla._exceptions import ArgillaAPIError, ArgillaCredentialsError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except httpx.TransportError as e:
        raise UserError(f"lost the connection to Argilla at {conn.api_url} while {doing} ({type(e).__name__}); "
                        "nothing was written, rerun when the server is back") from None
    except ArgillaCredentialsError:
        raise UserError(f"the Argilla server at {conn.api_url} rejected the API key while {doing}; "
                        f"check {KEY_ENV} / --api-key") from None
    except ArgillaAPIError as e:
        code = getattr(e, "status_code", None)
        if code in (401, 403):
            raise UserError(
                f"the Argilla user of this API key may not do this ({doing}: HTTP {code}); use an owner or admin key "
                "of the workspace"
            ) from None
        raise UserError(f"the Argilla server at {conn.api_url} refused a request while {doing} (HTTP {code}: "
                        f"{_reason(e, conn)}); check the server's log") from None


def _reason(e: Exception, conn: Connection) -> str:
    """The first line of an exception's text, the API key masked before the cut to 200 characters."""
    text = redact(str(e), [conn.api_key]).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:200] + ("…" if len(line) > 200 else "")
