"""A careless or hostile client of ``serve``: every malformed request is answered with an error
naming the field, the engine keeps serving, and it exits as soon as its input ends.

One engine (random weights, CPU, tiny images) takes the whole sequence; each hostile message is
followed by a real job, so an engine that stopped answering fails the test at once.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from test_serve import (PY, TINY, content_image, in_thread, log_text, make_client, next_reply,
                        send_raw, serve_argv, style_image, wait_exit)

from nst_engine.bridge import client as client_module
from nst_engine.bridge import wire
from nst_engine.bridge.client import EngineFailed
from nst_engine.bridge.wire import PREFIX, MAGIC, Code, Msg

ENDLESS = {**TINY, "iterations": 20000}
#: The longest message a hostile request may get back (it quotes only an excerpt).
BOUND = 1000


def raw(header: dict, payload: bytes = b"") -> bytes:
    """A message as a careless client writes it: Python's JSON, NaN and Infinity included."""
    body = json.dumps(header).encode()
    return PREFIX.pack(MAGIC, len(body), len(payload)) + body + payload


def nested(depth: int):
    v: object = 1
    for _ in range(depth):
        v = [v]
    return v


def stylize(rid, **extra) -> bytes:
    """A stylize request for a 2x2 content and a 2x2 style, with its payload."""
    header = {"type": Msg.STYLIZE, "id": rid, "protocol": wire.PROTOCOL_VERSION,
              "preset": None, "overrides": TINY, "device": None,
              "images": [{"role": "content", "width": 2, "height": 2},
                         {"role": "style", "width": 2, "height": 2, "weight": 1.0}], **extra}
    return raw(header, b"\xc8" * 32)  # grey, opaque enough to be a style


BAD_IDS = {
    "list": [1, 2],
    "object": {"a": 1},
    "nested": nested(500),
    "nan": float("nan"),
    "infinity": float("inf"),
    "bool": True,
    "huge int": 10 ** 3000,
    "long text": "i" * 100_000,
}

#: (message, code, words in the error): each must be answered, with id null when the id is bad.
HOSTILE = {
    **{f"stylize id {k}": (stylize(v), Code.BAD_REQUEST, "'id'") for k, v in BAD_IDS.items()},
    **{f"cancel id {k}": (raw({"type": Msg.CANCEL, "id": v}), Code.BAD_REQUEST, "'id'")
       for k, v in BAD_IDS.items()},
    "stylize without id": (stylize(None), Code.BAD_REQUEST, "'id'"),
    "long preset name": (stylize(11, preset="p" * 500_000), Code.BAD_REQUEST, "'preset'"),
    "preset as object": (stylize(12, preset={"x": nested(300)}), Code.BAD_REQUEST, "'preset'"),
    "long device": (stylize(13, device="d" * 500_000), Code.BAD_REQUEST, "'device'"),
    "long protocol": (stylize(14, protocol="v" * 500_000), Code.PROTOCOL_VERSION, "protocol"),
    "nested protocol": (stylize(15, protocol=nested(500)), Code.PROTOCOL_VERSION, "protocol"),
    "long type": (raw({"type": "t" * 500_000, "id": 16}), Code.UNKNOWN_TYPE, "unknown"),
    "many overrides": (stylize(17, overrides={f"k{i}": i for i in range(1000)}),
                       Code.BAD_REQUEST, "'overrides'"),
    "overrides as list": (stylize(18, overrides=nested(400)), Code.BAD_REQUEST, "'overrides'"),
    "nested image size": (raw({"type": Msg.STYLIZE, "id": 19, "protocol": 1, "images": [
        {"role": "content", "width": nested(400), "height": "h" * 100_000},
        {"role": "style", "width": 1, "height": 1, "weight": 1}]}, bytes(8)),
        Code.BAD_REQUEST, "images[0]"),
    # Well-formed requests whose values the engine refuses: the reply quotes an excerpt.
    "unknown preset": (stylize(20, preset="q" * 250), "preset_error", "no preset named"),
    "long override key": (stylize(21, overrides={"k" * 200_000: 1}), "invalid_input",
                          "Unknown setting"),
    "huge override": (stylize(22, overrides={**TINY, "learning_rate": 10 ** 500}),
                      "invalid_input", "out of range"),
    "long override text": (stylize(23, overrides={**TINY, "optimizer": "o" * 500_000}),
                           "invalid_input", "must be one of"),
    "zero content layers": (stylize(24, overrides={**TINY, "content_layers": {"relu4_2": 0}}),
                            "invalid_input", "weight 0"),
}


@pytest.fixture(scope="module")
def engine(random_weights_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-engine")
    client = make_client(serve_argv(random_weights_file), tmp)
    client.start()
    client.tmp = tmp
    yield client
    client.close()


def next_answer(client):
    """The next reply that is not progress (a job queued behind the one just finished may be
    told it is ``waiting`` first)."""
    while (reply := next_reply(client)).type == Msg.PROGRESS:
        pass
    return reply


def still_serving(client) -> None:
    result = in_thread(lambda: client.stylize(content_image(4, 3), [(style_image(4, 4), 1.0)],
                                              overrides={**TINY, "iterations": 1}))
    assert (result.width, result.height) == (4, 3)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_is_answered_and_the_engine_goes_on(engine, name):
    data, code, words = HOSTILE[name]
    send_raw(engine, data)
    reply = next_answer(engine)
    assert reply.type == Msg.ERROR and reply.header["code"] == code, reply.header
    assert words in reply.header["message"], reply.header["message"]
    assert len(reply.header["message"]) < BOUND and reply.header["hint"]
    rid = json.loads(data[PREFIX.size:PREFIX.size + PREFIX.unpack(data[:PREFIX.size])[1]]).get("id")
    assert reply.header["id"] == (rid if wire.is_valid_id(rid) else None)
    still_serving(engine)
    assert engine._proc.poll() is None


def test_cancel_and_duplicate_ids_of_a_running_job(engine):
    """A second job with the id of a running one is refused (cancels are keyed by id); a bad
    cancel neither stops it nor kills the reader; a good one does."""
    optimizing = []
    send_raw(engine, stylize("job-1", overrides=ENDLESS))
    while not optimizing:
        reply = next_reply(engine)
        assert reply.type == Msg.PROGRESS and reply.header["id"] == "job-1", reply.header
        optimizing = reply.header["stage"] == "optimizing"
    send_raw(engine, stylize("job-1"))
    send_raw(engine, raw({"type": Msg.CANCEL, "id": [["job-1"]]}))
    errors = []
    while len(errors) < 2:
        reply = next_reply(engine)
        if reply.type == Msg.ERROR:
            errors.append(reply.header)
    assert errors[0]["code"] == Code.BAD_REQUEST and "has not finished" in errors[0]["message"]
    assert errors[1]["code"] == Code.BAD_REQUEST and "'id'" in errors[1]["message"]
    send_raw(engine, raw({"type": Msg.CANCEL, "id": "job-1"}))
    reply = next_answer(engine)
    assert reply.type == Msg.ERROR and reply.header["code"] == Code.CANCELLED
    assert reply.header["id"] == "job-1"
    still_serving(engine)


def test_client_refuses_a_request_it_cannot_encode(engine):
    """A NaN setting from a script using the client: a bad request, not an engine crash, and
    nothing was written, so the engine is still in step."""
    with pytest.raises(EngineFailed) as e:
        engine.stylize(content_image(4, 3), [(style_image(4, 4), 1.0)],
                       overrides={**TINY, "strength": float("nan")})
    assert e.value.code == Code.BAD_REQUEST and "cannot be sent" in e.value.message
    still_serving(engine)


def test_engine_exits_when_input_ends_after_hostile_input(engine):
    send_raw(engine, HOSTILE["cancel id nested"][0] + HOSTILE["stylize id nan"][0])
    engine._proc.stdin.close()
    assert wait_exit(engine) == 0
    assert "Traceback" not in log_text(engine.tmp)


UNENCODABLE = textwrap.dedent("""
    # An engine bug: an error message too large for the wire, with the engine's own bound
    # switched off. The reply cannot be encoded; the client must get an internal error, and
    # the engine must go on serving (it used to take this for a closed pipe and exit).
    import sys
    import nst_engine.presets, nst_engine.server.session
    from nst_engine.errors import InvalidInput
    nst_engine.server.session.bounded = lambda text: text
    _resolve = nst_engine.presets.resolve
    def resolve(name=None, overrides=None, **kw):
        if (overrides or {}).get("seed") == 777:
            raise InvalidInput("x" * (2 << 20))
        return _resolve(name, overrides, **kw)
    nst_engine.presets.resolve = resolve
    from nst_engine.cli import main
    raise SystemExit(main(sys.argv[1:]))
""")


def test_reply_that_cannot_be_encoded_is_an_internal_error_not_an_exit(
        random_weights_file, tmp_path):
    client = make_client([PY, "-c", UNENCODABLE, *serve_argv(random_weights_file)[3:]],
                         tmp_path)
    try:
        client.start()
        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                             overrides={**TINY, "seed": 777}))
        assert e.value.code == Code.INTERNAL and "could not encode" in e.value.message
        still_serving(client)
    finally:
        client.close()
    assert client._proc.returncode == 0
    assert next_reply(client) is client_module._EOF


@pytest.mark.skipif(sys.platform == "win32", reason="uses a pipe's end of input")
def test_truncated_hostile_payload_ends_the_engine(random_weights_file, tmp_path):
    """A request that declares a payload and then the input ends: answered, and the engine
    exits (status 3: out of step) instead of waiting for bytes that never come."""
    client = make_client(serve_argv(random_weights_file), tmp_path)
    try:
        client.start()
        send_raw(client, stylize([1])[:-10])
        client._proc.stdin.close()
        reply = next_reply(client)
        assert reply.type == Msg.ERROR and reply.header["code"] == Code.BAD_FRAME
        assert wait_exit(client) == 3
    finally:
        client.close()
