"""The plug-in ↔ engine wire format: the one definition both sides use. Standard library only.

A message is ``struct ">4sII"`` = magic ``b"NSTF"``, header length, payload length; then the
header, a UTF-8 JSON object with a ``"type"``; then the payload (raw bytes, often empty).
Every size is checked against the limits *before* anything is allocated, so a message that claims
10 GB is refused, not attempted. (What travels is a *message*; a *frame* is always one picture
of an animation, which one ``stylize`` message carries.)

Engine → client (the engine's first message is always ``hello`` or a start-up ``error``):

- ``hello``: ``protocol``, ``engine_version``, ``device`` (or null), ``torch``,
  ``weights`` ``{"status", "notice"}``, ``notices`` (list of strings)
- ``progress``: ``id``, ``stage``, ``level``, ``levels``, ``iteration``, ``total``, ``elapsed``,
  ``eta`` (or null), ``width``, ``height`` (the level's working size; 0 before it starts),
  ``tiles`` (0 = the level runs whole), ``note`` (or null: e.g. an out-of-memory retry)
- ``result``: ``id``, ``width``, ``height``, ``notices`` + RGBA payload (width × height × 4)
- ``error``: ``id`` (or null when no request is to blame), ``code``, ``message``, ``hint``

Client → engine:

- ``stylize``: ``id``, ``protocol``, ``preset`` (or null), ``overrides`` (object), ``device``,
  ``images``: ``[{"role": "content", "width", "height"},
  {"role": "style", "width", "height", "weight"}, ...]`` + payload: the RGBA bytes of each image
  in that order (content first); optional ``animation``: ``{"clip", "frame", "frames",
  "loop"}`` when the content is frame ``frame`` of ``frames`` of one animation (sent in order;
  the engine keeps what the next frames need)
- ``cancel``: ``id``;  ``shutdown``

A framing error (bad magic, over a limit, truncated, bad JSON) leaves the stream unusable: the
reader raises a *fatal* :class:`ProtocolError`. A well-framed message that is wrong (unknown
type, other protocol version, bad fields) has its payload skipped, unread into memory, and
raises a non-fatal one, so the engine answers it and goes on serving.

Requests are checked field by field (:func:`check_request`): an ``id`` is a string of at most
``MAX_ID_CHARS`` characters or a finite number (null only in ``cancel``: every job), so it can be
hashed, compared and echoed back (null, or none, in ``shutdown`` too); texts are bounded; a message never quotes more than an
excerpt of what it was sent. An error about a request whose own id is bad carries ``id`` null.
"""

from __future__ import annotations

import io
import json
import math
import reprlib
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
#: Request fields: longest text id, preset name and device name; most override entries.
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 256
MAX_OVERRIDES = 64
#: Most frames in one animation (``stylize``'s ``animation.frames``; the CLI's limit too).
MAX_ANIMATION_FRAMES = 300
#: Largest style blend weight (weights are relative; a bound keeps them floats).
MAX_WEIGHT = 1e9
#: Integer ids beyond this are refused (JSON readers in other languages lose precision).
MAX_ID_INT = 2 ** 53
#: Longest excerpt of a peer's value that a message quotes.
EXCERPT = 60
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

    #: A message whose framing is broken (magic, lengths, truncated): the stream is out of step.
    #: The wire's name predates the word "message" for what travels; it stays as sent.
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
    #: The engine is at one of its bounds (connections, queued jobs, payload memory): the
    #: request was refused, the engine goes on; try again when a job has finished.
    BUSY = "busy"
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


class Message(NamedTuple):
    """One message read off the wire: its checked header and its payload."""

    header: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return self.header["type"]


class EncodeError(ValueError):
    """A header that cannot become a message (NaN, an object JSON has no form for, too large):
    the sender's bug, not a closed stream."""


class ProtocolError(Exception):
    """A message, or its framing, that breaks the protocol. ``fatal``: the stream is out of step
    and must be closed. ``id``: the request it belongs to, when known."""

    def __init__(self, code: str, message: str, *, fatal: bool, id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.id = id


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    # math.isfinite() of a 400-digit int raises OverflowError: ints are finite by nature.
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = EXCERPT
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 1, 3, 3


def excerpt(value: Any) -> str:
    """``repr(value)`` cut to a bounded length and depth: what a message may quote of a peer's
    input (a deeply nested or huge value would otherwise make the message itself huge)."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an int past Python's digit limit
        return f"<{type(value).__name__}>"


def is_valid_id(v: Any) -> bool:
    """A request id the engine can hash and echo: a short string or a finite number."""
    if isinstance(v, str):
        return len(v) <= MAX_ID_CHARS
    if _is_int(v):
        return abs(v) <= MAX_ID_INT
    return isinstance(v, float) and math.isfinite(v)


# ---------------------------------------------------------------------------------- encoding

def encode_header(header: dict[str, Any], payload_len: int = 0) -> bytes:
    """Prefix + JSON header; the payload is written after it by the caller (no copy).
    Raises EncodeError when the header cannot be sent."""
    if not isinstance(header.get("type"), str):
        raise EncodeError("a message header needs a string 'type'")
    try:
        body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as e:
        raise EncodeError(f"the {excerpt(header['type'])} header cannot be encoded as JSON: "
                          f"{excerpt(str(e))}") from None
    if len(body) > MAX_HEADER:
        raise EncodeError(f"message header of {len(body)} bytes exceeds {MAX_HEADER}")
    return PREFIX.pack(MAGIC, len(body), payload_len) + body


def encode_message(header: dict[str, Any], payload: bytes = b"") -> bytes:
    return encode_header(header, len(payload)) + bytes(payload)


def write_message(stream: BinaryIO, header: dict[str, Any], *parts: bytes) -> None:
    """Write one message whose payload is ``parts`` joined, then flush. Not thread-safe: callers
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
        raise ProtocolError(Code.BAD_FRAME, f"not a message: magic {magic!r}, expected {MAGIC!r}",
                            fatal=True)
    if hlen == 0 or hlen > MAX_HEADER:
        raise ProtocolError(Code.TOO_LARGE if hlen else Code.BAD_FRAME,
                            f"message header length {hlen} outside 1..{MAX_HEADER}", fatal=True)
    if plen > max_payload:
        raise ProtocolError(Code.TOO_LARGE,
                            f"message payload of {plen} bytes exceeds the limit of {max_payload}",
                            fatal=True)
    return hlen, plen


def parse_header(body: bytes) -> dict[str, Any]:
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(Code.BAD_JSON, f"message header is not UTF-8 JSON: {e}",
                            fatal=True) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(Code.BAD_JSON, "message header is not a JSON object with a 'type'",
                            fatal=True)
    return header


def check_message(header: dict[str, Any], payload_len: int, accept: frozenset[str]) -> None:
    """Type known to this side, fields well-formed, declared image sizes add up to the payload.
    Raises a non-fatal ProtocolError; runs before the payload is read."""
    kind = header["type"]
    rid = header.get("id")
    rid = rid if is_valid_id(rid) else None  # an error must be able to echo it

    def bad(msg: str, code: str = Code.BAD_REQUEST) -> ProtocolError:
        return ProtocolError(code, f"{kind}: {msg}", fatal=False, id=rid)

    if kind not in accept:
        raise ProtocolError(Code.UNKNOWN_TYPE,
                            f"unknown message type {excerpt(kind)} (expected one of "
                            f"{', '.join(sorted(accept))})", fatal=False, id=rid)
    if kind in CLIENT_TYPES:
        check_request(header)
    if kind == Msg.STYLIZE:
        expected = _images_size(header.get("images"), bad)
    elif kind == Msg.RESULT:
        w, h = header.get("width"), header.get("height")
        if not (_is_int(w) and _is_int(h) and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise bad(f"bad size {excerpt(w)}x{excerpt(h)}")
        expected = w * h * 4
    else:
        expected = 0
    if payload_len != expected:
        raise bad(f"payload is {payload_len} bytes, the header declares {expected}")


def check_request(header: dict[str, Any]) -> None:
    """The fields of a client message (``stylize``, ``cancel``, ``shutdown``), except the image
    sizes (``check_message`` adds those up against the payload). Raises a non-fatal
    ProtocolError (``bad_request``, or ``protocol_version``) that names the field; its ``id`` is
    the request's when that is valid, else None. Runs in any transport before a request is
    used, so a stored or echoed value is always hashable, finite and short."""
    kind = header.get("type")
    rid = header.get("id")

    def bad(msg: str, code: str = Code.BAD_REQUEST) -> ProtocolError:
        return ProtocolError(code, f"{kind}: {msg}", fatal=False,
                             id=rid if is_valid_id(rid) else None)

    if not (is_valid_id(rid) or (rid is None and kind != Msg.STYLIZE)):
        extra = {Msg.CANCEL: " or null (every job)", Msg.SHUTDOWN: " or null"}.get(kind, "")
        raise bad(f"'id' must be a string of at most {MAX_ID_CHARS} characters or a finite "
                  f"number{extra}, not {excerpt(rid)}")
    if kind != Msg.STYLIZE:
        return
    if header.get("protocol") != PROTOCOL_VERSION:
        raise bad(f"protocol version {excerpt(header.get('protocol'))}, this engine speaks "
                  f"{PROTOCOL_VERSION}", Code.PROTOCOL_VERSION)
    overrides = header.get("overrides", {})
    if overrides is not None and not isinstance(overrides, dict):
        raise bad(f"'overrides' must be an object, not {excerpt(overrides)}")
    if overrides and len(overrides) > MAX_OVERRIDES:
        raise bad(f"'overrides' has {len(overrides)} entries, more than {MAX_OVERRIDES}")
    for field in ("preset", "device"):
        value = header.get(field)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_NAME_CHARS):
            raise bad(f"'{field}' must be null or a string of at most {MAX_NAME_CHARS} "
                      f"characters, not {excerpt(value)}")
    if header.get("animation") is not None:
        _check_animation(header["animation"], bad)


def _check_animation(anim: Any, bad) -> None:
    """A ``stylize``'s ``animation``: ``{"clip": id, "frame": n, "frames": N, "loop": bool}``,
    this request being frame n (1-based) of N of the clip (docs/PROTOCOL.md)."""
    if not isinstance(anim, dict):
        raise bad(f"'animation' must be null or an object, not {excerpt(anim)}")
    if not is_valid_id(anim.get("clip")):
        raise bad(f"'animation.clip' must be a string of at most {MAX_ID_CHARS} characters or a "
                  f"finite number, not {excerpt(anim.get('clip'))}")
    frames, frame = anim.get("frames"), anim.get("frame")
    if not (_is_int(frames) and 2 <= frames <= MAX_ANIMATION_FRAMES):
        raise bad(f"'animation.frames' must be a whole number from 2 to {MAX_ANIMATION_FRAMES}, "
                  f"not {excerpt(frames)}")
    if not (_is_int(frame) and 1 <= frame <= frames):
        raise bad(f"'animation.frame' must be a whole number from 1 to {frames}, not "
                  f"{excerpt(frame)}")
    if not isinstance(anim.get("loop", False), bool):
        raise bad(f"'animation.loop' must be true or false, not {excerpt(anim.get('loop'))}")


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
            raise bad(f"images[{i}] size {excerpt(w)}x{excerpt(h)} outside 1..{MAX_SIDE}")
        if role == Role.STYLE and not (_is_number(im.get("weight"))
                                       and 0 <= im["weight"] <= MAX_WEIGHT):
            raise bad(f"images[{i}] needs a 'weight' from 0 to {MAX_WEIGHT:g}, not "
                      f"{excerpt(im.get('weight'))}")
        total += w * h * 4
    if len(images) < 2:
        raise bad("no style image")
    return total


def read_message(stream: BinaryIO, *, accept: frozenset[str],
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> Message | None:
    """The next message, or None at a clean end of stream (between messages).

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
    return Message(header, _read_exact(stream, plen) if plen else b"")


def decode_message(data: bytes, *, accept: frozenset[str] = ENGINE_TYPES | CLIENT_TYPES,
                   max_payload: int = DEFAULT_MAX_PAYLOAD) -> Message:
    """Exactly one message from ``data``; anything else raises ProtocolError."""
    stream = io.BytesIO(data)
    message = read_message(stream, accept=accept, max_payload=max_payload)
    if message is None:
        raise ProtocolError(Code.BAD_FRAME, "no message: empty input", fatal=True)
    if stream.tell() != len(data):
        raise ProtocolError(Code.BAD_FRAME, f"{len(data) - stream.tell()} bytes after the message",
                            fatal=True)
    return message


def _read_exact(stream: BinaryIO, n: int, *, at_start: bool = False) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:got + _CHUNK])
        if not k:  # 0 = end of stream (None would be a non-blocking stream: not used)
            if at_start and got == 0:
                return None
            raise ProtocolError(Code.BAD_FRAME, f"truncated message: end of stream after {got} of "
                                f"{n} bytes", fatal=True)
        got += k
    return bytes(buf) if n < _CHUNK else buf  # type: ignore[return-value]


def _skip(stream: BinaryIO, n: int) -> None:
    scratch = memoryview(bytearray(min(n, _CHUNK)))
    while n > 0:
        k = stream.readinto(scratch[:min(n, _CHUNK)])
        if not k:
            raise ProtocolError(Code.BAD_FRAME, "truncated message: end of stream in a payload",
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
