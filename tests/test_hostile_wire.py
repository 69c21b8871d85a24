"""Property-based fuzz of request validation (``wire.check_request`` via the message reader).

Whatever JSON a client sends, reading it either gives a request whose fields the engine can use
as they are (an id it can hash and echo, short texts), or a non-fatal ProtocolError whose reply
can be encoded and stays short. ``NST_FUZZ_EXAMPLES`` raises the number of cases (CI runs the
default, a bounded number).
"""

from __future__ import annotations

import io
import json
import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nst_engine.bridge import wire
from nst_engine.bridge.wire import CLIENT_TYPES, MAGIC, PREFIX, Code, Msg, ProtocolError

FUZZ = int(os.environ.get("NST_FUZZ_EXAMPLES", "1500"))
fuzz = settings(max_examples=max(100, FUZZ // 3), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
#: The longest message a refused request may get (it quotes excerpts only).
BOUND = 800


def nested(depth: int, leaf=1):
    v = leaf
    for _ in range(depth):
        v = [v]
    return v


# Any JSON value a careless client could send, NaN and Infinity included (Python's json reads
# them), huge integers, long texts and deep nesting.
scalars = (st.none() | st.booleans() | st.integers()
           | st.integers(min_value=10 ** 20, max_value=10 ** 1000)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.integers(0, 5000).map(lambda n: "x" * n))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
hostile = values | st.integers(0, 500).map(nested)
fields = st.sampled_from(["id", "protocol", "preset", "device", "overrides", "images", "x"])


def good_stylize() -> dict:
    return {"type": Msg.STYLIZE, "id": 1, "protocol": wire.PROTOCOL_VERSION, "preset": None,
            "overrides": {}, "device": None,
            "images": [{"role": "content", "width": 1, "height": 1},
                       {"role": "style", "width": 1, "height": 1, "weight": 1.0}]}


def message(header: dict, payload: bytes = b"") -> bytes:
    body = json.dumps(header).encode()  # allow_nan: what a careless client writes
    return PREFIX.pack(MAGIC, len(body), len(payload)) + body + payload


def read_one(header: dict, payload: bytes = b""):
    """The reader's verdict on one message: the message, or the ProtocolError (checked here)."""
    try:
        return wire.read_message(io.BytesIO(message(header, payload)), accept=CLIENT_TYPES)
    except ProtocolError as e:
        assert e.code in vars(Code).values() and not e.fatal
        assert e.id is None or wire.is_valid_id(e.id)
        assert len(e.message) < BOUND, e.message[:200]
        # The engine's reply to it can always be encoded.
        wire.encode_message({"type": Msg.ERROR, "id": e.id, "code": e.code,
                             "message": e.message, "hint": ""})
        return e


def assert_usable(f: wire.Message) -> None:
    """What the engine does with a request it accepted: hash its id, echo it, read texts."""
    h = f.header
    rid = h.get("id")
    assert rid is None and f.type != Msg.STYLIZE or wire.is_valid_id(rid)
    hash(rid)
    wire.encode_message({"type": Msg.PROGRESS, "id": rid})
    if f.type == Msg.STYLIZE:
        for key in ("preset", "device"):
            assert h.get(key) is None or (isinstance(h[key], str)
                                          and len(h[key]) <= wire.MAX_NAME_CHARS)
        assert isinstance(h.get("overrides") or {}, dict)


@fuzz
@given(kind=st.sampled_from(sorted(CLIENT_TYPES)), field=fields, value=hostile)
def test_fuzz_one_hostile_field(kind, field, value):
    header = good_stylize() if kind == Msg.STYLIZE else {"type": kind, "id": 1}
    header[field] = value
    payload = bytes(8) if kind == Msg.STYLIZE else b""
    result = read_one(header, payload)
    if isinstance(result, wire.Message):
        assert_usable(result)


@fuzz
@given(kind=st.sampled_from(sorted(CLIENT_TYPES)),
       header=st.dictionaries(fields, hostile, max_size=6))
def test_fuzz_whole_hostile_header(kind, header):
    result = read_one({**header, "type": kind})
    if isinstance(result, wire.Message):
        assert_usable(result)


@fuzz
@given(index=st.integers(0, 1), key=st.sampled_from(["role", "width", "height", "weight"]),
       value=hostile)
def test_fuzz_hostile_image_entry(index, key, value):
    header = good_stylize()
    header["images"][index][key] = value
    result = read_one(header, bytes(8))
    if isinstance(result, wire.Message):  # what serve does with it: sizes and float weights
        for im, data in wire.split_images(result.header, result.payload):
            assert len(data) == im["width"] * im["height"] * 4
        # (the content's weight is never read)
        assert all(math.isfinite(float(im["weight"])) for im in result.header["images"][1:])


@fuzz
@given(rid=hostile)
def test_fuzz_ids_accepted_are_exactly_the_usable_ones(rid):
    result = read_one({"type": Msg.CANCEL, "id": rid})
    usable = (rid is None or (isinstance(rid, str) and len(rid) <= wire.MAX_ID_CHARS)
              or (isinstance(rid, float) and math.isfinite(rid))
              or (type(rid) is int and abs(rid) <= wire.MAX_ID_INT))
    assert isinstance(result, wire.Message) == usable, (rid, result)
    if not usable:
        assert result.code == Code.BAD_REQUEST and "'id'" in result.message


@fuzz
@given(stream=st.lists(st.tuples(st.sampled_from(sorted(CLIENT_TYPES)), fields, hostile),
                       min_size=1, max_size=5))
def test_fuzz_stream_of_hostile_requests_stays_in_step(stream):
    """Refused requests skip their payloads: the message after each is read intact."""
    data = b""
    for kind, field, value in stream:
        header = good_stylize() if kind == Msg.STYLIZE else {"type": kind, "id": 1}
        header[field] = value
        data += message(header, bytes(8) if kind == Msg.STYLIZE else b"")
        data += message({"type": Msg.CANCEL, "id": "marker"})
    reader = io.BytesIO(data)
    for _ in stream:
        try:
            wire.read_message(reader, accept=CLIENT_TYPES)
        except ProtocolError as e:
            assert not e.fatal
        marker = wire.read_message(reader, accept=CLIENT_TYPES)
        assert marker.header == {"type": Msg.CANCEL, "id": "marker"}
    assert wire.read_message(reader, accept=CLIENT_TYPES) is None


def test_unencodable_header_is_an_encode_error_not_a_closed_stream():
    # serve tells the two apart: an EncodeError is its own bug, answered as `internal`.
    for header in ({"type": Msg.ERROR, "id": float("nan")},
                   {"type": Msg.ERROR, "message": "m" * (wire.MAX_HEADER + 1)},
                   {"type": Msg.ERROR, "id": object()},
                   {"type": Msg.ERROR, "id": nested(100_000)}):
        try:
            wire.encode_message(header)
        except wire.EncodeError as e:
            assert len(str(e)) < BOUND
        else:
            raise AssertionError(f"encoded {str(header)[:80]}")
