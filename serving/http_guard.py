"""The service's front door: API keys, a body-size limit, one-line 4xx logs, and connection recycling.

A plain ASGI middleware (no BentoML in here), added to the service by :mod:`serving.service`:

- **API keys.** With ``CLVCAST_API_KEYS`` (comma-separated) or ``CLVCAST_API_KEYS_FILE`` (one key
  per line, ``#`` comments) set, every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer
  KEY``, else 401. Keys are compared with :func:`hmac.compare_digest` against every configured key
  (the time does not depend on where a guess differs) and never logged.
- **Body size.** A request body over ``CLVCAST_MAX_BODY_BYTES`` (default
  :data:`DEFAULT_MAX_BODY_BYTES`) is answered 413 before anything parses it: at once from
  ``Content-Length``, or as soon as a chunked body passes the limit. The body is read in chunks,
  so a worker never holds more than the limit.
- **4xx in the API's terms, on one log line.** BentoML answers a validation error with the
  request class's name (``... for ClvRequest``) and logs it as an ERROR with a traceback; the body
  is rewritten to name the request body instead, and the request is logged once at INFO (4xx) by
  this middleware, while :func:`quiet_client_errors` drops BentoML's traceback of it.
- **Connections spread over the workers.** All workers accept from one shared socket, and an idle
  worker takes every waiting connection at once; with keep-alive clients one worker then serves
  everything. After :data:`DEFAULT_REQUESTS_PER_CONNECTION` requests a connection is answered
  with ``Connection: close``: the client reconnects, and the worker that accepts first, the idle
  one, takes the new connection.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

API_KEYS_ENV = "CLVCAST_API_KEYS"
API_KEYS_FILE_ENV = "CLVCAST_API_KEYS_FILE"
MAX_BODY_ENV = "CLVCAST_MAX_BODY_BYTES"
REQUESTS_PER_CONNECTION_ENV = "CLVCAST_REQUESTS_PER_CONNECTION"

#: Probes and metrics: load balancers and Prometheus call them without a key.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
#: 16 MiB: a request at the documented row limit (200,000 history rows of ~60 bytes of JSON each)
#: takes about 12 MB; anything much larger cannot be valid and would cost the worker ~20x its size
#: in memory to parse.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_REQUESTS_PER_CONNECTION = 200

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ConfigError(ValueError):
    """An API-key or limit setting that cannot be used (names the variable)."""


def api_keys(environ: MutableMapping[str, str] | None = None) -> tuple[str, ...]:
    """The configured API keys: ``CLVCAST_API_KEYS`` and the lines of ``CLVCAST_API_KEYS_FILE``.

    Parameters
    ----------
    environ : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    tuple of str
        Empty when neither variable is set: the service is open.

    Raises
    ------
    ConfigError
        The key file is unreadable, a variable is set but holds no key, or a key is not printable ASCII.
    """
    env = os.environ if environ is None else environ
    keys: list[str] = []
    if env.get(API_KEYS_ENV) is not None:
        keys += [k.strip() for k in env[API_KEYS_ENV].split(",") if k.strip()]
        if not keys:
            raise ConfigError(f"{API_KEYS_ENV} is set but holds no key")
    if env.get(API_KEYS_FILE_ENV):
        path = Path(env[API_KEYS_FILE_ENV])
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{API_KEYS_FILE_ENV}={path}: {exc.strerror or exc}") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise ConfigError(f"{API_KEYS_FILE_ENV}={path} holds no key")
        keys += from_file
    for key in keys:
        if not key.isascii() or not key.isprintable() or " " in key:
            raise ConfigError("an API key must be printable ASCII without spaces")
    return tuple(keys)


def max_body_bytes(environ: MutableMapping[str, str] | None = None) -> int:
    """``CLVCAST_MAX_BODY_BYTES`` or :data:`DEFAULT_MAX_BODY_BYTES`.

    Raises
    ------
    ConfigError
        Not a positive integer.
    """
    env = os.environ if environ is None else environ
    raw = env.get(MAX_BODY_ENV)
    if raw is None:
        return DEFAULT_MAX_BODY_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{MAX_BODY_ENV}={raw!r}: expected a positive number of bytes")
    return int(raw)


class Guard:
    """ASGI middleware: see the module docstring. Settings are read from the environment when built."""

    def __init__(self, app) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in api_keys())
        self.max_body = max_body_bytes()
        self.per_connection = int(os.environ.get(REQUESTS_PER_CONNECTION_ENV, DEFAULT_REQUESTS_PER_CONNECTION))
        # Requests served per open connection (client address and port); bounded below.
        self.served: dict[tuple, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if self.keys and path not in OPEN_PATHS and not self._authorized(scope):
            log.warning("401 %s %s from %s: missing or unknown API key", method, path, _client(scope))
            await _answer(send, 401, {"error": "missing or unknown API key: send 'Authorization: Bearer <key>'"},
                          [(b"www-authenticate", b"Bearer")])
            return
        if method in ("POST", "PUT", "PATCH"):
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await self._too_large(scope, send, length)
                return
            if length is None:
                body = await _read_limited(receive, self.max_body)
                if body is None:
                    await self._too_large(scope, send, "more")
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, self._sender(scope, send))

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode("utf-8", "replace")
        # Every key is compared, whatever matched first: the answer's timing says nothing about them.
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(given, key)
        return found

    async def _too_large(self, scope: Scope, send: Send, length: str) -> None:
        log.warning("413 %s %s from %s: body of %s bytes over the limit of %d",
                    scope["method"], scope["path"], _client(scope), length, self.max_body)
        # The unread body stays on the connection: close it rather than parse what follows.
        await _answer(send, 413, {"error": f"request body larger than {self.max_body} bytes"},
                      [(b"connection", b"close")])

    def _sender(self, scope: Scope, send: Send) -> Send:
        connection = (tuple(scope.get("client") or ()), tuple(scope.get("server") or ()))
        served = self.served.get(connection, 0) + 1
        recycle = served >= self.per_connection
        if recycle:
            self.served.pop(connection, None)
        else:
            if len(self.served) > 10_000:  # connections that closed on their own
                self.served.clear()
            self.served[connection] = served
        state: dict[str, Any] = {}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if recycle:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
                if 400 <= message["status"] < 500:
                    state.update(start=message, body=b"")  # held until the body is complete
                    return
            elif message["type"] == "http.response.body" and "start" in state:
                state["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                start, body = _client_error(scope, state["start"], state["body"])
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return wrapped


def _client_error(scope: Scope, start: Message, body: bytes) -> tuple[Message, bytes]:
    """Log a 4xx once at INFO and put BentoML's error body in the API's own terms."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]  # BentoML wraps some errors in a one-element list
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list) and payload["detail"]:
        errors = payload["detail"]
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        payload["error"] = f"invalid request: {len(errors)} error(s), first at {where}: {first.get('msg', '')}"
    summary = payload.get("error") if isinstance(payload, dict) else body[:200].decode("utf-8", "replace")
    log.info("%d %s %s from %s: %s", start["status"], scope["method"], scope["path"], _client(scope), summary)
    if payload is None:
        return start, body
    new_body = json.dumps(payload).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new_body)).encode()))
    return {**start, "headers": headers}, new_body


def quiet_client_errors() -> None:
    """Drop BentoML's ERROR-with-traceback log of requests it answers 4xx (this module logs them once).

    BentoML logs every exception of an API call as ``Exception on <path> [<method>]`` with the
    traceback, also a request body that fails validation; a filter on its logger keeps only the
    records whose exception is not a client error.
    """
    logging.getLogger("bentoml._internal.server.http_app").addFilter(_not_a_client_error)


def _not_a_client_error(record: logging.LogRecord) -> bool:
    from pydantic import ValidationError

    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, ValidationError):
        return False
    code = getattr(getattr(exc, "error_code", None), "value", None)
    return not (isinstance(code, int) and 400 <= code < 500)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


async def _read_limited(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the connection's own messages (a disconnect, when it comes)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, payload: dict, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})
