"""The seed's signalling protocol: request validation and reply building.

Pure: no Twisted, no sockets.  The ROUTER endpoint (``rill.protocols.router``)
feeds raw frames and the current wall-clock time in; what comes out is either a
validated request (a ``dict``) or a :class:`RequestError` carrying a human
readable reason, and replies as ``bytes``.

The protocol, as the seed's TODO section defines it:

* every request is one JSON object with the mandatory string fields
  ``unique_id``, ``client_id`` and ``datetime`` (UTC, ``YYYY-MM-DDTHH:MM:SS.mmmZ``,
  exactly three millisecond digits) and the command's name in ``command``;
* every reply echoes ``unique_id`` and ``client_id``, adds the server's
  ``datetime`` and ``status`` (``ok``/``failed``), and ``failure_reason``
  whenever ``status`` is ``failed``.  When a request is too broken to carry an
  id (not JSON, not an object, id missing or not a string) the reply echoes
  ``null`` for that id.

Requests older than ``max_request_age`` seconds, or dated more than
``future_skew`` seconds ahead of the server's clock, are rejected as stale.
Fields beyond the ones a command knows are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MANDATORY_FIELDS = ("unique_id", "client_id", "datetime")
DEFAULT_FUTURE_SKEW = 2.0
OK = "ok"
FAILED = "failed"

_DATETIME = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z\Z", re.ASCII)
_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class RequestError(Exception):
    """A request that gets a ``failed`` reply; ``reason`` says why, for humans.

    ``fields`` are extra reply fields (e.g. ``bytes_written`` of 0).
    """

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True)
class Field:
    """One command-specific request field: its JSON type and whether it must be present."""

    kind: type
    required: bool = True


# The session commands' own fields (beyond the mandatory ones), as the seed lists them.
SESSION_COMMANDS: Mapping[str, Mapping[str, Field]] = {
    "create_session": {},
    "delete_session": {"session_id": Field(str)},
    "send_data_to_session": {"session_id": Field(str), "contents": Field(str)},
    "get_session_info": {"session_id": Field(str, required=False)},
}


# -- datetimes ---------------------------------------------------------------


def format_datetime(epoch: float) -> str:
    """``epoch`` seconds as the protocol's ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (truncated to ms)."""
    millis = round(epoch * 1_000_000) // 1000
    moment = datetime.fromtimestamp(millis // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


def parse_datetime(text: str) -> float:
    """The protocol's datetime string as epoch seconds; ValueError saying what is wrong."""
    match = _DATETIME.match(text)
    if match is None:
        raise ValueError(f"datetime {text!r} is not of the form YYYY-MM-DDTHH:MM:SS.mmmZ (UTC, three millisecond digits)")
    year, month, day, hour, minute, second, millis = (int(part) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"datetime {text!r} is not a valid date and time: {e}") from None
    return moment.timestamp()


def check_freshness(sent: float, now: float, max_request_age: float, future_skew: float) -> None:
    """RequestError if a request sent at ``sent`` is stale or dated in the future at ``now``."""
    age = now - sent
    if age > max_request_age:
        raise RequestError(f"stale request: sent {age:.3f} s ago, older than max_request_age ({max_request_age:g} s)")
    if -age > future_skew:
        raise RequestError(
            f"request dated in the future: {-age:.3f} s ahead of the server's clock "
            f"(allowed skew {future_skew:g} s); check the client's clock"
        )


# -- requests ----------------------------------------------------------------


def json_type_name(value: object) -> str:
    """The JSON name of ``value``'s type (``object``, ``array``, ``string``, ...)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """The JSON object in ``payload`` (strict UTF-8, no NaN/Infinity); RequestError otherwise."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"malformed request: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise RequestError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise RequestError(f"malformed JSON: {str(e) or 'nested too deeply'}") from None
    if not isinstance(value, dict):
        raise RequestError(f"malformed request: expected a JSON object, got {json_type_name(value)}")
    return value


def echo_ids(value: object) -> tuple[str | None, str | None]:
    """The ``unique_id`` and ``client_id`` a reply to ``value`` echoes (None where absent or not strings)."""
    if not isinstance(value, dict):
        return None, None
    ids = (value.get("unique_id"), value.get("client_id"))
    return tuple(v if isinstance(v, str) else None for v in ids)  # type: ignore[return-value]


def check_fields(request: Mapping[str, Any], spec: Mapping[str, Field]) -> None:
    """RequestError naming the first field of ``spec`` that is missing or of the wrong type."""
    for name, field in spec.items():
        if name not in request:
            if field.required:
                raise RequestError(f"missing field {name!r}")
            continue
        value = request[name]
        if not isinstance(value, field.kind) or (field.kind is int and isinstance(value, bool)):
            expected = json_type_name(field.kind())
            raise RequestError(f"field {name!r} must be a {expected}, got {json_type_name(value)}")
        if isinstance(value, str):
            _check_encodable(name, value)


def _check_encodable(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"field {name!r} holds a lone UTF-16 surrogate: not valid Unicode text") from None


_MANDATORY_SPEC = {name: Field(str) for name in (*MANDATORY_FIELDS, "command")}


def validate_request(
    request: dict[str, Any], now: float, max_request_age: float, future_skew: float = DEFAULT_FUTURE_SKEW
) -> dict[str, Any]:
    """``request`` if its mandatory fields are present, well typed and fresh; RequestError otherwise."""
    check_fields(request, _MANDATORY_SPEC)
    for name in ("unique_id", "client_id", "command"):
        if not request[name]:
            raise RequestError(f"field {name!r} must not be empty")
    try:
        sent = parse_datetime(request["datetime"])
    except ValueError as e:
        raise RequestError(str(e)) from None
    check_freshness(sent, now, max_request_age, future_skew)
    return request


def decode_request(
    payload: bytes, now: float, max_request_age: float, future_skew: float = DEFAULT_FUTURE_SKEW
) -> dict[str, Any]:
    """Parse and validate one request payload; RequestError with the reason otherwise."""
    return validate_request(parse_json_object(payload), now, max_request_age, future_skew)


# -- replies -----------------------------------------------------------------


def bytes_written_fields(count: int) -> dict[str, int]:
    """``bytes_written`` and the seed's own spelling ``bytes written``, both ``count``."""
    return {"bytes_written": count, "bytes written": count}


def bytes_read_fields(count: int) -> dict[str, int]:
    """``bytes_read`` and the seed's own spelling ``bytes read``, both ``count``."""
    return {"bytes_read": count, "bytes read": count}


def ok_reply(request: Mapping[str, Any], now: float, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``status: ok`` reply to ``request`` at ``now``, with the command's ``fields``."""
    reply = dict(fields or {})
    reply.pop("failure_reason", None)
    reply.update(_envelope(request, now, OK))
    return reply


def failed_reply(
    request: object, now: float, reason: str, fields: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``status: failed`` reply to ``request`` (possibly not even an object) at ``now``."""
    reply = dict(fields or {})
    reply.update(_envelope(request, now, FAILED))
    reply["failure_reason"] = reason or "failed"
    return reply


def _envelope(request: object, now: float, status: str) -> dict[str, Any]:
    unique_id, client_id = echo_ids(request)
    envelope: dict[str, Any] = {"unique_id": unique_id, "client_id": client_id}
    if isinstance(request, dict) and isinstance(request.get("command"), str):
        envelope["command"] = request["command"]
    envelope.update(datetime=format_datetime(now), status=status)
    return envelope


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """``reply`` as compact JSON bytes (ASCII-escaped, so any echoed string encodes)."""
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")


def is_well_formed_reply(reply: object) -> bool:
    """Whether ``reply`` has the fields every reply must carry, with the right types."""
    if not isinstance(reply, dict):
        return False
    ids_ok = all(reply.get(k) is None or isinstance(reply.get(k), str) for k in ("unique_id", "client_id"))
    fields_ok = ids_ok and "unique_id" in reply and "client_id" in reply
    try:
        parse_datetime(reply.get("datetime", ""))
    except (TypeError, ValueError):
        return False
    if reply.get("status") == OK:
        return fields_ok
    return fields_ok and reply.get("status") == FAILED and isinstance(reply.get("failure_reason"), str)


# -- ZeroMQ envelopes ----------------------------------------------------------


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into its reply envelope and its body.

    ``frames[0]`` is the peer's identity.  A REQ client (or a DEALER speaking
    like one, or a chain of proxies) puts routing frames and an empty delimiter
    before the body: the envelope is everything up to and including the first
    empty frame.  A plain DEALER sends the body right after the identity.
    """
    if not frames:
        return [], []
    for index in range(1, len(frames)):
        if frames[index] == b"":
            return list(frames[: index + 1]), list(frames[index + 1 :])
    return [frames[0]], list(frames[1:])


def body_payload(body: Sequence[bytes], max_size: int) -> bytes:
    """The one payload frame of ``body``; RequestError if there is not exactly one or it is too big."""
    size = sum(len(frame) for frame in body)
    if size > max_size:
        raise RequestError(f"message too large: {size} bytes, the limit is {max_size} bytes")
    if len(body) != 1:
        raise RequestError(
            f"expected exactly one JSON frame after the identity (and optional empty delimiter), got {len(body)} frames"
        )
    return body[0]
