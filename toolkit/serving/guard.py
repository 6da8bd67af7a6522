"""`BodyGuard`: an ASGI middleware that checks request bodies before the app parses them.

For requests with a body it enforces `max_body_bytes` (from Content-Length at once, else while
reading: 413), and checks the bytes are UTF-8 (400) and well-formed JSON (400, with line and
column). The body is then handed on unchanged, marked `application/json` so that clients which
forget the header (`curl -d` sends form encoding) are still understood.
"""

from __future__ import annotations

import json

JSON_METHODS = {"POST", "PUT", "PATCH"}


class BodyGuard:
    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, int(max_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in JSON_METHODS:
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            return await _reply(send, 413, f"request body is {length} bytes, over the limit of {limit} "
                                           "(--max-body-bytes); send fewer pairs per request")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _reply(send, 413, f"request body is over the limit of {limit} bytes (--max-body-bytes); "
                                               "send fewer pairs per request")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _check_json(body)
        if problem:
            return await _reply(send, 400, problem)
        headers = ([(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                   + [(b"content-type", b"application/json")])
        scope = {**scope, "headers": headers}
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _content_length(scope) -> int | None:
    for k, v in scope["headers"]:
        if k.lower() == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _check_json(body: bytes) -> str | None:
    if not body.strip():
        return "empty request body; send a JSON object such as {\"query\": \"...\", \"items\": [{\"title\": \"...\"}]}"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return (f"request body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start}); "
                "encode the JSON as UTF-8")
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
    except RecursionError:
        return "malformed JSON: nested too deeply"
    return None


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
