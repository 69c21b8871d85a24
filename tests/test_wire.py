"""The message format: round trips, limits checked before allocation, and a fuzzed decoder.

``NST_FUZZ_EXAMPLES`` raises the number of generated cases for a longer run by hand.
"""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nst_engine.bridge import wire
from nst_engine.bridge.wire import (CLIENT_TYPES, ENGINE_TYPES, MAGIC, PREFIX, Code, Msg,
                                    ProtocolError, RGBAImage, decode_message, encode_message,
                                    read_message)

FUZZ = int(os.environ.get("NST_FUZZ_EXAMPLES", "1500"))
fuzz = settings(max_examples=FUZZ, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
#: Round trips need fewer cases than the decoder fuzzing (and nested JSON is slow to generate).
round_trips = settings(fuzz, max_examples=max(100, FUZZ // 5))
ALL = ENGINE_TYPES | CLIENT_TYPES


def stylize_header(sizes=((3, 2), (2, 2)), **extra):
    images = [{"role": "content", "width": sizes[0][0], "height": sizes[0][1]}]
    images += [{"role": "style", "width": w, "height": h, "weight": 1.0} for w, h in sizes[1:]]
    return {"type": Msg.STYLIZE, "id": 7, "protocol": wire.PROTOCOL_VERSION, "preset": None,
            "overrides": {}, "device": "cpu", "images": images, **extra}


def raw_message(header_bytes: bytes, payload: bytes = b"", *, magic=MAGIC, plen=None) -> bytes:
    return PREFIX.pack(magic, len(header_bytes),
                       len(payload) if plen is None else plen) + header_bytes + payload


class CountingStream(io.BytesIO):
    """Records the largest buffer the reader allocated (the object under each ``readinto``
    view), to prove nothing big was allocated for a refused message."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def readinto(self, b) -> int:
        self.largest = max(self.largest, len(getattr(b, "obj", b)))
        return super().readinto(b)


# ------------------------------------------------------------------------------ round trips

def test_stylize_round_trip_splits_images_in_order():
    payload = bytes(range(24)) + bytes(range(100, 116))
    msg = decode_message(encode_message(stylize_header(), payload), accept=CLIENT_TYPES)
    assert msg.type == Msg.STYLIZE and msg.header["id"] == 7
    (c, cdata), (s, sdata) = wire.split_images(msg.header, msg.payload)
    assert (c["role"], bytes(cdata)) == ("content", bytes(range(24)))
    assert (s["role"], bytes(sdata)) == ("style", bytes(range(100, 116)))


def test_stream_of_messages_then_clean_end():
    data = (encode_message({"type": Msg.HELLO, "protocol": 1})
            + encode_message({"type": Msg.RESULT, "id": 1, "width": 1, "height": 2}, b"x" * 8)
            + encode_message({"type": Msg.ERROR, "id": None, "code": "c", "message": "m"}))
    stream = io.BytesIO(data)
    types = []
    while (f := read_message(stream, accept=ENGINE_TYPES)) is not None:
        types.append(f.type)
    assert types == [Msg.HELLO, Msg.RESULT, Msg.ERROR]


@round_trips
@given(header=st.dictionaries(st.text(max_size=8),
                              st.recursive(st.none() | st.booleans() | st.integers()
                                           | st.floats(allow_nan=False, allow_infinity=False)
                                           | st.text(max_size=20),
                                           lambda kids: st.lists(kids, max_size=4)
                                           | st.dictionaries(st.text(max_size=5), kids,
                                                             max_size=4), max_leaves=10),
                              max_size=5),
       kind=st.sampled_from(sorted(ALL - {Msg.STYLIZE, Msg.RESULT})))
def test_round_trip_any_json_header(header, kind):
    header = {**header, "type": kind}
    assert decode_message(encode_message(header)).header == header


@round_trips
@given(w=st.integers(1, 9), h=st.integers(1, 9), data=st.data())
def test_round_trip_result_payload(w, h, data):
    payload = data.draw(st.binary(min_size=w * h * 4, max_size=w * h * 4))
    f = decode_message(encode_message({"type": Msg.RESULT, "id": 1, "width": w, "height": h},
                                      payload), accept=ENGINE_TYPES)
    assert (f.header["width"], f.header["height"], bytes(f.payload)) == (w, h, payload)


# ------------------------------------------------------------------------------ limits

def test_huge_payload_claim_refused_before_reading():
    stream = CountingStream(raw_message(b'{"type":"result"}', plen=0xFFFFFFFF))
    with pytest.raises(ProtocolError) as e:
        read_message(stream, accept=ENGINE_TYPES)
    assert e.value.code == Code.TOO_LARGE and e.value.fatal
    assert stream.largest <= PREFIX.size


def test_payload_cap_is_configurable():
    data = encode_message({"type": Msg.RESULT, "id": 1, "width": 4, "height": 4}, bytes(64))
    assert decode_message(data, accept=ENGINE_TYPES, max_payload=64)
    with pytest.raises(ProtocolError) as e:
        decode_message(data, accept=ENGINE_TYPES, max_payload=63)
    assert e.value.code == Code.TOO_LARGE


def test_huge_header_claim_refused():
    with pytest.raises(ProtocolError) as e:
        read_message(CountingStream(PREFIX.pack(MAGIC, wire.MAX_HEADER + 1, 0)), accept=ALL)
    assert e.value.code == Code.TOO_LARGE


def test_declared_images_must_add_up_and_payload_is_skipped_unallocated():
    # 1 GiB is the cap; the header declares far less than the payload: refused without reading
    # the payload into memory, and the next message is still readable.
    bad = encode_message(stylize_header(), bytes(24 + 16 + 4))
    good = encode_message({"type": Msg.CANCEL, "id": 7})
    stream = CountingStream(bad + good)
    with pytest.raises(ProtocolError) as e:
        read_message(stream, accept=CLIENT_TYPES)
    assert e.value.code == Code.BAD_REQUEST and not e.value.fatal and e.value.id == 7
    assert read_message(stream, accept=CLIENT_TYPES).type == Msg.CANCEL


@pytest.mark.parametrize("images, why", [
    ([{"role": "content", "width": 2, "height": 2}], "no style"),
    ([{"role": "style", "width": 2, "height": 2, "weight": 1},
      {"role": "content", "width": 2, "height": 2}], "content first"),
    ([{"role": "content", "width": 0, "height": 2},
      {"role": "style", "width": 2, "height": 2, "weight": 1}], "outside"),
    ([{"role": "content", "width": wire.MAX_SIDE + 1, "height": 1},
      {"role": "style", "width": 2, "height": 2, "weight": 1}], "outside"),
    ([{"role": "content", "width": True, "height": 2},
      {"role": "style", "width": 2, "height": 2, "weight": 1}], "outside"),
    ([{"role": "content", "width": 2, "height": 2},
      {"role": "style", "width": 2, "height": 2, "weight": -1}], "weight"),
    ("nope", "non-empty list"),
])
def test_bad_image_declarations(images, why):
    header = {**stylize_header(), "images": images}
    with pytest.raises(ProtocolError) as e:
        decode_message(encode_message(header, bytes(32)), accept=CLIENT_TYPES)
    assert e.value.code == Code.BAD_REQUEST and why in e.value.message


def test_other_protocol_version_is_named():
    with pytest.raises(ProtocolError) as e:
        decode_message(encode_message(stylize_header(protocol=99), bytes(40)),
                       accept=CLIENT_TYPES)
    assert e.value.code == Code.PROTOCOL_VERSION and not e.value.fatal and "99" in e.value.message


@pytest.mark.parametrize("data, code", [
    (raw_message(b'{"type":"cancel"}', magic=b"XXXX"), Code.BAD_FRAME),
    (raw_message(b'{"type":"cancel"'), Code.BAD_JSON),
    (raw_message(b'\xff\xfe'), Code.BAD_JSON),
    (raw_message(b'[1, 2]'), Code.BAD_JSON),
    (raw_message(b'{"type": 3}'), Code.BAD_JSON),
    (raw_message(b'{"type":"launch"}'), Code.UNKNOWN_TYPE),
    (raw_message(b'{"type":"hello"}'), Code.UNKNOWN_TYPE),  # an engine message sent to the engine
    (raw_message(b'{"type":"cancel"}', b"xy"), Code.BAD_REQUEST),  # cancel carries no payload
    (encode_message({"type": "cancel"})[:-1], Code.BAD_FRAME),  # truncated
    (encode_message({"type": "cancel"})[:5], Code.BAD_FRAME),
    (encode_message({"type": "cancel"}) + b"\0", Code.BAD_FRAME),  # trailing garbage
    (b"", Code.BAD_FRAME),
])
def test_malformed_messages(data, code):
    with pytest.raises(ProtocolError) as e:
        decode_message(data, accept=CLIENT_TYPES)
    assert e.value.code == code


def test_rgba_image_checks_its_size():
    RGBAImage(2, 1, bytes(8)).check()
    with pytest.raises(ValueError, match="needs 8 bytes"):
        RGBAImage(2, 1, bytes(7)).check()
    with pytest.raises(ValueError):
        RGBAImage(0, 1, b"").check()


def test_header_must_be_json_without_nan():
    with pytest.raises(ValueError):
        encode_message({"type": Msg.PROGRESS, "eta": float("nan")})


# ------------------------------------------------------------------------------ fuzzing

def _decode_or_protocol_error(data: bytes) -> None:
    try:
        msg = decode_message(data, accept=ALL)
    except ProtocolError as e:
        assert e.code in vars(Code).values()
        return
    # Whatever decodes re-encodes to the same bytes' meaning.
    assert decode_message(encode_message(msg.header, msg.payload), accept=ALL) == msg


def _stream_until_end_or_error(data: bytes) -> None:
    stream = io.BytesIO(data)
    for _ in range(len(data) + 1):  # every message consumes >= 12 bytes, so this ends
        try:
            if read_message(stream, accept=ALL) is None:
                return
        except ProtocolError as e:
            if e.fatal:
                return
    raise AssertionError("the reader did not make progress")


@fuzz
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data):
    _decode_or_protocol_error(data)
    _decode_or_protocol_error(MAGIC + data)
    _stream_until_end_or_error(MAGIC + data)


_valid_messages = st.sampled_from([
    encode_message(stylize_header(), bytes(40)),
    encode_message({"type": Msg.RESULT, "id": 1, "width": 2, "height": 1}, bytes(8)),
    encode_message({"type": Msg.PROGRESS, "id": 1, "stage": "optimizing", "iteration": 3}),
    encode_message({"type": Msg.CANCEL, "id": 1}),
    encode_message({"type": Msg.SHUTDOWN}),
])


@fuzz
@given(messages=st.lists(_valid_messages, min_size=1, max_size=3),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 10_000))
def test_fuzz_mutated_valid_messages(messages, edits, cut):
    # Flipped bytes (often in the length fields or the JSON) and truncation at any point.
    data = bytearray(b"".join(messages))
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[:cut % (len(data) + 1)])
    _decode_or_protocol_error(data)
    _stream_until_end_or_error(data)


@fuzz
@given(magic=st.binary(min_size=4, max_size=4), hlen=st.integers(0, 2**32 - 1),
       plen=st.integers(0, 2**32 - 1), rest=st.binary(max_size=64))
def test_fuzz_prefix_fields(magic, hlen, plen, rest):
    # Any length the prefix claims is refused or read from what is there: never allocated
    # beyond the limits, never a hang.
    stream = CountingStream(struct.pack(">4sII", magic, hlen, plen) + rest)
    try:
        read_message(stream, accept=ALL, max_payload=1 << 16)
    except ProtocolError:
        pass
    assert stream.largest <= max(wire.MAX_HEADER, 1 << 16)


def test_json_nesting_bomb_is_a_protocol_error():
    body = b'{"type":"cancel","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError) as e:
        decode_message(raw_message(body), accept=ALL)
    assert e.value.code == Code.BAD_JSON
