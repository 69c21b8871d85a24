"""The plug-in ↔ engine wire format: the one definition both sides use. Standard library only.

A frame is ``struct ">4sII"`` = magic ``b"NSTF"``, header length, payload length; then the
header, a UTF-8 JSON object with a ``"type"``; then the payload (raw bytes, often empty).
Every size is checked against the limits *before* anything is allocated, so a frame that claims
10 GB is refused, not attempted.

Engine → client (the engine's first frame is always ``hello`` or a start-up ``error``):

- ``hello``: ``protocol``, ``engine_version``, ``device`` (or null), ``torch``,
  ``weights`` ``{"status", "notice"}``, ``notices`` (list of strings)
- ``progress``: ``id``, ``stage``, ``level``, ``levels``, ``iteration``, ``total``, ``elapsed``,
  ``eta`` (or null)
- ``result``: ``id``, ``width``, ``height``, ``notices`` + RGBA payload (width × height × 4)
- ``error``: ``id`` (or null when no request is to blame), ``code``, ``message``, ``hint``

Client → engine:

- ``stylize``: ``id``, ``protocol``, ``preset`` (or null), ``overrides`` (object), ``device``,
  ``images``: ``[{"role": "content", "width", "height"},
  {"role": "style", "width", "height", "weight"}, ...]`` + payload: the RGBA bytes of each image
  in that order (content first)
- ``cancel``: ``id``;  ``shutdown``

A framing error (bad magic, over a limit, truncated, bad JSON) leaves the stream unusable: the
reader raises a *fatal* :class:`ProtocolError`. A well-framed message that is wrong (unknown
type, other protocol version, bad fields) has its payload skipped, unread into memory, and
raises a non-fatal one, so the engine answers it and goes on serving.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any, BinaryIO, NamedTuple

#: Bump on any incompatible change; both sides refuse a peer that speaks another version.
PROTOCOL_VERSION = 1

MAGIC = b"NSTF"
PREFIX = struct.Struct(">4sII")
MAX_HEADER = 1 << 20
DEFAULT_MAX_PAYLOAD = 1 << 30
#: Longest side of any image on the wire (GIMP's own limit is 524288; ours is memory's).
MAX_SIDE = 1 << 15
_CHUNK = 1 << 20


class Msg:
    """Message type names (the header's ``"type"``)."""

    HELLO = "hello"
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"
    STYLIZE = "stylize"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"


ENGINE_TYPES = frozenset({Msg.HELLO, Msg.PROGRESS, Msg.RESULT, Msg.ERROR})
CLIENT_TYPES = frozenset({Msg.STYLIZE, Msg.CANCEL, Msg.SHUTDOWN})


class Role:
    """Image roles in a ``stylize`` request."""

    CONTENT = "content"
    STYLE = "style"


class Code:
    """Error codes the protocol and the bridge create. The engine's own failures carry the
    ``.code`` of ``nst_engine.errors`` classes (weights_missing, cancelled, ...)."""

    BAD_FRAME = "bad_frame"
    TOO_LARGE = "too_large"
    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    PROTOCOL_VERSION = "protocol_version"
    INTERNAL = "internal"
    ENGINE_NOT_STARTED = "engine_not_started"
    ENGINE_CRASHED = "engine_crashed"
    PRESETS_UNAVAILABLE = "presets_unavailable"
    #: Not created by the bridge; named here because the client treats it specially.
    CANCELLED = "cancelled"


class RGBAImage(NamedTuple):
    """8-bit RGBA pixels, row-major, no padding: ``len(data) == width * height * 4``."""

    width: int
    height: int
    data: bytes

    def check(self) -> None:
        if not (_is_int(self.width) and _is_int(self.height)
                and 1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{MAX_SIDE}")
        if len(self.data) != self.width * self.height * 4:
            raise ValueError(f"{self.width}x{self.height} RGBA needs "
                             f"{self.width * self.height * 4} bytes, got {len(self.data)}")


class Frame(NamedTuple):
    header: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return self.header["type"]


class ProtocolError(Exception):
    """A frame or message that breaks the protocol. ``fatal``: the stream is out of step and
    must be closed. ``id``: the request it belongs to, when known."""

    def __init__(self, code: str, message: str, *, fatal: bool, id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.id = id


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


# ---------------------------------------------------------------------------------- encoding

def encode_header(header: dict[str, Any], payload_len: int = 0) -> bytes:
    """Prefix + JSON header; the payload is written after it by the caller (no copy)."""
    if not isinstance(header.get("type"), str):
        raise ValueError("a frame header needs a string 'type'")
    body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_HEADER:
        raise ValueError(f"frame header of {len(body)} bytes exceeds {MAX_HEADER}")
    return PREFIX.pack(MAGIC, len(body), payload_len) + body


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    return encode_header(header, len(payload)) + bytes(payload)


def write_frame(stream: BinaryIO, header: dict[str, Any], *parts: bytes) -> None:
    """Write one frame whose payload is ``parts`` joined, then flush. Not thread-safe: callers
    that write from several threads hold a lock."""
    _write_all(stream, encode_header(header, sum(len(p) for p in parts)))
    for p in parts:
        _write_all(stream, p)
    flush = getattr(stream, "flush", None)
    if flush:
        flush()


def _write_all(stream: BinaryIO, data: bytes) -> None:
    # Raw (unbuffered) files and pipes may take only part of a large write.
    view = memoryview(data)
    while view:
        n = stream.write(view)
        if n is None:  # a non-blocking stream that would block: not used here
            raise BlockingIOError("stream would block")
        view = view[n:]


# ---------------------------------------------------------------------------------- decoding

def parse_prefix(prefix: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[int, int]:
    """(header length, payload length) from the 12-byte prefix, limits checked."""
    magic, hlen, plen = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError(Code.BAD_FRAME, f"not a frame: magic {magic!r}, expected {MAGIC!r}",
                            fatal=True)
    if hlen == 0 or hlen > MAX_HEADER:
        raise ProtocolError(Code.TOO_LARGE if hlen else Code.BAD_FRAME,
                            f"frame header length {hlen} outside 1..{MAX_HEADER}", fatal=True)
    if plen > max_payload:
        raise ProtocolError(Code.TOO_LARGE,
                            f"frame payload of {plen} bytes exceeds the limit of {max_payload}",
                            fatal=True)
    return hlen, plen


def parse_header(body: bytes) -> dict[str, Any]:
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(Code.BAD_JSON, f"frame header is not UTF-8 JSON: {e}",
                            fatal=True) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(Code.BAD_JSON, "frame header is not a JSON object with a 'type'",
                            fatal=True)
    return header


def check_message(header: dict[str, Any], payload_len: int, accept: frozenset[str]) -> None:
    """Type known to this side, fields well-formed, declared image sizes add up to the payload.
    Raises a non-fatal ProtocolError; runs before the payload is read."""
    kind = header["type"]
    rid = header.get("id")

    def bad(msg: str, code: str = Code.BAD_REQUEST) -> ProtocolError:
        return ProtocolError(code, f"{kind}: {msg}", fatal=False, id=rid)

    if kind not in accept:
        raise ProtocolError(Code.UNKNOWN_TYPE,
                            f"unknown message type {kind[:64]!r} (expected one of "
                            f"{', '.join(sorted(accept))})", fatal=False, id=rid)
    if kind == Msg.STYLIZE:
        if header.get("protocol") != PROTOCOL_VERSION:
            raise bad(f"protocol version {header.get('protocol')!r}, this engine speaks "
                      f"{PROTOCOL_VERSION}", Code.PROTOCOL_VERSION)
        if not isinstance(header.get("overrides", {}), dict):
            raise bad("'overrides' must be an object")
        if header.get("preset") is not None and not isinstance(header["preset"], str):
            raise bad("'preset' must be a string or null")
        if header.get("device") is not None and not isinstance(header["device"], str):
            raise bad("'device' must be a string or null")
        expected = _images_size(header.get("images"), bad)
    elif kind == Msg.RESULT:
        w, h = header.get("width"), header.get("height")
        if not (_is_int(w) and _is_int(h) and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise bad(f"bad size {w!r}x{h!r}")
        expected = w * h * 4
    else:
        expected = 0
    if payload_len != expected:
        raise bad(f"payload is {payload_len} bytes, the header declares {expected}")


def _images_size(images: Any, bad) -> int:
    if not isinstance(images, list) or not images:
        raise bad("'images' must be a non-empty list")
    if len(images) > 64:
        raise bad("more than 64 images")
    total = 0
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise bad(f"images[{i}] is not an object")
        role = Role.CONTENT if i == 0 else Role.STYLE
        if im.get("role") != role:
            raise bad(f"images[{i}] must have role {role!r} (content first, then styles)")
        w, h = im.get("width"), im.get("height")
        if not (_is_int(w) and _is_int(h) and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise bad(f"images[{i}] size {w!r}x{h!r} outside 1..{MAX_SIDE}")
        if role == Role.STYLE and not (_is_number(im.get("weight")) and im["weight"] >= 0):
            raise bad(f"images[{i}] needs a 'weight' >= 0")
        total += w * h * 4
    if len(images) < 2:
        raise bad("no style image")
    return total


def read_frame(stream: BinaryIO, *, accept: frozenset[str],
               max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame | None:
    """The next frame, or None at a clean end of stream (between frames).

    ``stream`` needs ``readinto`` (a raw ``io.FileIO`` is best: no lock a daemon reader thread
    could hold at exit)."""
    prefix = _read_exact(stream, PREFIX.size, at_start=True)
    if prefix is None:
        return None
    hlen, plen = parse_prefix(prefix, max_payload=max_payload)
    header = parse_header(_read_exact(stream, hlen))
    try:
        check_message(header, plen, accept)
    except ProtocolError:
        _skip(stream, plen)
        raise
    return Frame(header, _read_exact(stream, plen) if plen else b"")


def decode_frame(data: bytes, *, accept: frozenset[str] = ENGINE_TYPES | CLIENT_TYPES,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Exactly one frame from ``data``; anything else raises ProtocolError."""
    stream = io.BytesIO(data)
    frame = read_frame(stream, accept=accept, max_payload=max_payload)
    if frame is None:
        raise ProtocolError(Code.BAD_FRAME, "no frame: empty input", fatal=True)
    if stream.tell() != len(data):
        raise ProtocolError(Code.BAD_FRAME, f"{len(data) - stream.tell()} bytes after the frame",
                            fatal=True)
    return frame


def _read_exact(stream: BinaryIO, n: int, *, at_start: bool = False) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:got + _CHUNK])
        if not k:  # 0 = end of stream (None would be a non-blocking stream: not used)
            if at_start and got == 0:
                return None
            raise ProtocolError(Code.BAD_FRAME, f"truncated frame: end of stream after {got} of "
                                f"{n} bytes", fatal=True)
        got += k
    return bytes(buf) if n < _CHUNK else buf  # type: ignore[return-value]


def _skip(stream: BinaryIO, n: int) -> None:
    scratch = memoryview(bytearray(min(n, _CHUNK)))
    while n > 0:
        k = stream.readinto(scratch[:min(n, _CHUNK)])
        if not k:
            raise ProtocolError(Code.BAD_FRAME, "truncated frame: end of stream in a payload",
                                fatal=True)
        n -= k


def split_images(header: dict[str, Any], payload: bytes) -> list[tuple[dict[str, Any], memoryview]]:
    """Each image entry of a checked ``stylize`` header with its slice of the payload."""
    out, offset, view = [], 0, memoryview(payload)
    for im in header["images"]:
        size = im["width"] * im["height"] * 4
        out.append((im, view[offset:offset + size]))
        offset += size
    return out
