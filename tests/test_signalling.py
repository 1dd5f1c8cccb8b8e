"""The pure signalling codec: datetimes, request validation, replies, envelopes."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill.protocols import signalling as sig
from rill.protocols.signalling import Field, RequestError

NOW = 1_790_000_000.0  # 2026-09-21, an arbitrary fixed "now"
MAX_AGE = 30.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
milliseconds = st.integers(min_value=0, max_value=7_258_118_399_999)  # 1970 to 2199: exact in a float


def request(**overrides: object) -> dict[str, object]:
    """A valid request at NOW, with ``overrides`` applied (a value of ... removes the field)."""
    base: dict[str, object] = {
        "unique_id": "u-1",
        "client_id": "c-1",
        "datetime": sig.format_datetime(NOW),
        "command": "get_session_info",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(payload: bytes, now: float = NOW) -> str:
    """The failure reason decode_request gives ``payload``."""
    try:
        sig.decode_request(payload, now, MAX_AGE)
    except RequestError as e:
        return e.reason
    raise AssertionError(f"{payload!r} was accepted")


class DatetimeTests(SynchronousTestCase):
    def test_format_example(self) -> None:
        """The seed's example format: three millisecond digits and a Z."""
        self.assertEqual(sig.format_datetime(1040774400.0), "2002-12-25T00:00:00.000Z")
        self.assertEqual(sig.format_datetime(1040774400.0999), "2002-12-25T00:00:00.099Z")

    @given(milliseconds)
    def test_round_trip(self, millis: int) -> None:
        """Formatting then parsing any time gives it back to the millisecond."""
        parsed = sig.parse_datetime(sig.format_datetime(millis / 1000))
        self.assertEqual(round(parsed * 1000), millis)

    @given(st.text(max_size=40))
    @example("2002-12-25T00:00:00.000Z")
    @example("2002-02-30T00:00:00.000Z")
    @example("2002-12-25T23:59:60.000Z")
    def test_parse_is_strict(self, text: str) -> None:
        """Any string either parses and formats back to itself, or fails with ValueError."""
        try:
            epoch = sig.parse_datetime(text)
        except ValueError as e:
            self.assertIn("datetime", str(e))
        else:
            self.assertEqual(sig.format_datetime(epoch), text)

    def test_rejected_variants(self) -> None:
        """Near misses of the format are rejected: no Z, offsets, two or six digits, spaces."""
        for text in (
            "2002-12-25T00:00:00.000",
            "2002-12-25T00:00:00.000+00:00",
            "2002-12-25T00:00:00.00Z",
            "2002-12-25T00:00:00.000000Z",
            "2002-12-25 00:00:00.000Z",
            "2002-12-25T00:00:00Z",
            "２００２-12-25T00:00:00.000Z",
        ):
            self.assertRaises(ValueError, sig.parse_datetime, text)


class RequestTests(SynchronousTestCase):
    def test_valid_request(self) -> None:
        """A complete, fresh request comes back as a dict."""
        payload = json.dumps(request(extra=1)).encode()
        self.assertEqual(sig.decode_request(payload, NOW, MAX_AGE)["extra"], 1)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, payload: bytes) -> None:
        """Arbitrary bytes decode to a request or fail with RequestError, nothing else."""
        try:
            self.assertIsInstance(sig.decode_request(payload, NOW, MAX_AGE), dict)
        except RequestError as e:
            self.assertTrue(e.reason)

    @given(json_values)
    def test_arbitrary_json(self, value: object) -> None:
        """Arbitrary JSON values that are not a complete request fail with a reason."""
        reason = reason_of(json.dumps(value).encode())
        self.assertTrue(reason)

    def test_pathological_json(self) -> None:
        """Deep nesting, huge integers, NaN and bad UTF-8 are reported, not raised."""
        cases = {
            b"[" * 100_000 + b"]" * 100_000: "malformed JSON",
            b'{"a": ' + b"9" * 5000 + b"}": "malformed JSON",
            b'{"a": NaN}': "malformed JSON",
            b"\xff\xfe{}": "not UTF-8",
            b"": "malformed JSON",
            b"[1, 2]": "expected a JSON object, got array",
            b'"text"': "expected a JSON object, got string",
        }
        for payload, expected in cases.items():
            self.assertIn(expected, reason_of(payload))

    @given(st.sampled_from(["unique_id", "client_id", "datetime", "command"]), json_values)
    def test_mandatory_fields(self, name: str, value: object) -> None:
        """A mandatory field that is missing or not a string is named in the reason."""
        if isinstance(value, str):
            value = ...
        reason = reason_of(json.dumps(request(**{name: value}) if value is not ... else request(**{name: ...})).encode())
        self.assertIn(repr(name), reason)

    def test_empty_ids(self) -> None:
        """Empty unique_id, client_id or command are rejected."""
        for name in ("unique_id", "client_id", "command"):
            self.assertIn("must not be empty", reason_of(json.dumps(request(**{name: ""})).encode()))

    @given(st.floats(min_value=-1000, max_value=1000))
    def test_freshness(self, offset: float) -> None:
        """A request is fresh iff sent no more than max_request_age ago and at most the skew ahead."""
        sent = NOW - offset
        payload = json.dumps(request(datetime=sig.format_datetime(sent))).encode()
        age = NOW - sig.parse_datetime(sig.format_datetime(sent))
        if -sig.DEFAULT_FUTURE_SKEW <= age <= MAX_AGE:
            sig.decode_request(payload, NOW, MAX_AGE)
        elif age > MAX_AGE:
            self.assertIn("stale request", reason_of(payload))
        else:
            self.assertIn("in the future", reason_of(payload))

    def test_stale_reason_is_clear(self) -> None:
        """The stale reason gives the age and the limit."""
        payload = json.dumps(request(datetime=sig.format_datetime(NOW - 45))).encode()
        self.assertEqual(
            reason_of(payload), "stale request: sent 45.000 s ago, older than max_request_age (30 s)"
        )

    def test_check_fields(self) -> None:
        """Command fields: required, optional, wrong types (bool is no integer), lone surrogates."""
        spec = {"session_id": Field(str), "n": Field(int, required=False)}
        sig.check_fields({"session_id": "s"}, spec)
        cases = [
            ({}, "missing field 'session_id'"),
            ({"session_id": 5}, "field 'session_id' must be a string, got integer"),
            ({"session_id": "s", "n": True}, "field 'n' must be a integer, got boolean"),
            ({"session_id": "\ud800"}, "lone UTF-16 surrogate"),
        ]
        for fields, reason in cases:
            error = self.assertRaises(RequestError, sig.check_fields, fields, spec)
            self.assertIn(reason, error.reason)


class ReplyTests(SynchronousTestCase):
    @given(json_values, st.text())
    def test_failed_reply_to_anything(self, value: object, reason: str) -> None:
        """A failed reply to any value is well formed and encodes as JSON."""
        reply = json.loads(sig.encode_reply(sig.failed_reply(value, NOW, reason)))
        self.assertTrue(sig.is_well_formed_reply(reply))
        self.assertEqual(reply["status"], "failed")

    @given(st.text(), st.text())
    def test_ids_echoed(self, unique_id: str, client_id: str) -> None:
        """Replies echo unique_id and client_id exactly, even with lone surrogates."""
        reply = sig.ok_reply({"unique_id": unique_id, "client_id": client_id}, NOW, {"unique_id": "x"})
        decoded = json.loads(sig.encode_reply(reply))
        self.assertEqual((decoded["unique_id"], decoded["client_id"]), (unique_id, client_id))
        self.assertEqual(decoded["status"], "ok")
        self.assertNotIn("failure_reason", decoded)

    def test_reply_fields(self) -> None:
        """Replies carry the server's datetime, the command and both spellings of bytes written."""
        reply = sig.ok_reply(request(), NOW + 1, sig.bytes_written_fields(7))
        self.assertEqual(reply["datetime"], sig.format_datetime(NOW + 1))
        self.assertEqual(reply["command"], "get_session_info")
        self.assertEqual((reply["bytes_written"], reply["bytes written"]), (7, 7))

    def test_not_well_formed(self) -> None:
        """is_well_formed_reply rejects replies lacking a status, reason or datetime."""
        good = sig.failed_reply(request(), NOW, "no")
        self.assertTrue(sig.is_well_formed_reply(good))
        for key in ("status", "failure_reason", "datetime", "unique_id"):
            self.assertFalse(sig.is_well_formed_reply({k: v for k, v in good.items() if k != key}))


class EnvelopeTests(SynchronousTestCase):
    @given(st.lists(st.binary(max_size=5), min_size=1, max_size=6))
    def test_split(self, frames: list[bytes]) -> None:
        """The envelope and body partition the frames; the envelope starts with the identity."""
        envelope, body = sig.split_envelope(frames)
        self.assertEqual(envelope + body, frames)
        self.assertEqual(envelope[0], frames[0])
        self.assertTrue(len(envelope) == 1 or envelope[-1] == b"")

    def test_req_and_dealer(self) -> None:
        """A REQ message keeps its delimiter in the envelope; a DEALER message has none."""
        self.assertEqual(sig.split_envelope([b"id", b"", b"{}"]), ([b"id", b""], [b"{}"]))
        self.assertEqual(sig.split_envelope([b"id", b"{}"]), ([b"id"], [b"{}"]))

    def test_body_payload(self) -> None:
        """A body must be one frame within the size limit."""
        self.assertEqual(sig.body_payload([b"{}"], 10), b"{}")
        self.assertIn("got 2 frames", self.assertRaises(RequestError, sig.body_payload, [b"a", b"b"], 10).reason)
        self.assertIn("got 0 frames", self.assertRaises(RequestError, sig.body_payload, [], 10).reason)
        self.assertIn("too large: 11 bytes", self.assertRaises(RequestError, sig.body_payload, [b"x" * 11], 10).reason)
