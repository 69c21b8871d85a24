"""The real ``python -m nst_engine serve`` process, driven through the stdlib client.

Random-weight files, tiny images, CPU. Every wait has a timeout, so a hang fails a test instead
of stalling the suite; no test asserts on how long something took.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from nst_engine.bridge import client as client_module
from nst_engine.bridge import wire
from nst_engine.bridge.client import EngineClient, EngineFailed, PipeClient, list_presets
from nst_engine.bridge.wire import MAGIC, PREFIX, Code, Msg, RGBAImage, encode_message

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = {"iterations": 2, "max_size": 64, "levels": 1, "seed": 1}
ENDLESS = {"iterations": 20000, "max_size": 64, "levels": 1, "seed": 1}
WAIT = 120  # seconds before a wait counts as a hang (the machine may be busy)


def serve_argv(weights) -> list[str]:
    return [PY, "-m", "nst_engine", "serve", "--weights", str(weights), "--device", "cpu"]


def make_client(argv, tmp_path, **kw) -> PipeClient:
    return PipeClient(argv, pythonpath=[str(ROOT)], log_path=tmp_path / "engine.log",
                      hello_timeout=kw.pop("hello_timeout", WAIT), **kw)


def content_image(w=24, h=20) -> RGBAImage:
    data = bytearray()
    for y in range(h):
        for x in range(w):
            data += bytes((x * 10 % 256, y * 12 % 256, (x * y) % 256, 40 + (x + y) * 4 % 200))
    return RGBAImage(w, h, bytes(data))


def style_image(w=16, h=16) -> RGBAImage:
    return RGBAImage(w, h, b"".join(bytes((200 * (x // 4 % 2), 60, 255 - 8 * y, 255))
                                    for y in range(h) for x in range(w)))


def in_thread(fn, timeout=WAIT):
    """fn() in a thread; its result, or its exception re-raised; a hang fails the test."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"hung for {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def send_raw(client: PipeClient, data: bytes) -> None:
    with client._write_lock:
        client._proc.stdin.write(data)


def next_reply(client: PipeClient):
    item = client._next(timeout=WAIT)
    assert item is not None, "no reply: the engine hung"
    return item


def wait_exit(client: PipeClient) -> int:
    try:
        return client._proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail("the engine did not exit")


def log_text(tmp_path) -> str:
    return (tmp_path / "engine.log").read_text("utf-8", "replace")


@pytest.fixture(scope="module")
def engine(random_weights_file, tmp_path_factory):
    """One engine for the tests that leave it serving."""
    tmp = tmp_path_factory.mktemp("engine")
    client = make_client(serve_argv(random_weights_file), tmp)
    client.start()
    yield client
    client.close()
    assert client._proc.returncode == 0


# ------------------------------------------------------------------------- a working engine

def test_hello_describes_the_engine(engine):
    import torch

    h = engine.hello
    assert h["type"] == Msg.HELLO and h["protocol"] == wire.PROTOCOL_VERSION
    assert h["device"] == "cpu" and h["torch"] == torch.__version__
    assert h["engine_version"]
    # A random-weight file is never presented as the real VGG19.
    assert h["weights"]["status"] == "unverified" and "checksum" in h["weights"]["notice"]
    assert h["weights"]["notice"] in h["notices"]


def test_job_reports_progress_and_returns_content_sized_rgba(engine):
    content, seen = content_image(), []
    result = in_thread(lambda: engine.stylize(content, [(style_image(), 1.0)], preset="quick",
                                              overrides=TINY, on_progress=seen.append))
    assert (result.width, result.height, len(result.data)) == (24, 20, 24 * 20 * 4)
    assert result.data[3::4] == content.data[3::4]  # the content's alpha is kept
    assert result.data != content.data  # the pixels were repainted
    assert len({p["id"] for p in seen}) == 1
    assert seen[0]["stage"] == "loading"
    assert seen[-1]["stage"] == "done" and seen[-1]["iteration"] == seen[-1]["total"] == 2
    assert any(p["stage"] == "optimizing" for p in seen)
    assert engine.last_notices and "checksum" in engine.last_notices[0]


def test_two_style_blend(engine):
    result = in_thread(lambda: engine.stylize(
        content_image(), [(style_image(), 0.7), (style_image(8, 12), 0.3)], overrides=TINY))
    assert (result.width, result.height) == (24, 20)


def test_failing_progress_callback_cancels_the_job(engine):
    def boom(p):
        if p["stage"] == "optimizing":
            raise RuntimeError("progress bar broke")

    with pytest.raises(RuntimeError, match="progress bar broke"):
        in_thread(lambda: engine.stylize(content_image(), [(style_image(), 1.0)],
                                         overrides=ENDLESS, on_progress=boom))
    # The endless job was cancelled, so the next one runs (and the old job's late replies
    # are not mistaken for this one's).
    result = in_thread(lambda: engine.stylize(content_image(), [(style_image(), 1.0)],
                                              overrides=TINY))
    assert result.width == 24


def test_engine_errors_become_user_messages(engine):
    with pytest.raises(EngineFailed) as e:
        in_thread(lambda: engine.stylize(content_image(), [(style_image(), 1.0)],
                                         overrides={"iteratons": 5}))
    assert e.value.code == "invalid_input" and "iteratons" in e.value.message
    with pytest.raises(EngineFailed) as e:
        in_thread(lambda: engine.stylize(content_image(), [(style_image(), 1.0)],
                                         preset="no-such-preset", overrides=TINY))
    assert e.value.code == "preset_error" and "no-such-preset" in e.value.message
    assert str(engine.log_path) in e.value.user_text()


@pytest.mark.parametrize("data, code", [
    (encode_message({"type": "launch_missiles", "id": 5}), Code.UNKNOWN_TYPE),
    (encode_message({"type": Msg.HELLO, "id": 5}), Code.UNKNOWN_TYPE),
    (encode_message({"type": Msg.STYLIZE, "id": 5, "protocol": 99, "images": []}),
     Code.PROTOCOL_VERSION),
    # Declares a 3x2 content and a 2x2 style (40 bytes) but sends 44: skipped, not allocated.
    (encode_message({"type": Msg.STYLIZE, "id": 5, "protocol": wire.PROTOCOL_VERSION,
                     "images": [{"role": "content", "width": 3, "height": 2},
                                {"role": "style", "width": 2, "height": 2, "weight": 1}]},
                    bytes(44)), Code.BAD_REQUEST),
])
def test_wrong_but_well_framed_message_is_answered_and_engine_goes_on(engine, data, code):
    send_raw(engine, data)
    reply = next_reply(engine)
    assert reply.type == Msg.ERROR and reply.header["code"] == code
    assert reply.header["id"] == 5 and reply.header["message"] and reply.header["hint"]
    # Still serving, still in step.
    result = in_thread(lambda: engine.stylize(content_image(4, 3), [(style_image(4, 4), 1.0)],
                                              overrides={**TINY, "iterations": 1}))
    assert (result.width, result.height) == (4, 3)


# ------------------------------------------------------------------------- cancel and close

def test_cancel_mid_job_then_serve_again_then_close_mid_job(random_weights_file, tmp_path):
    client = make_client(serve_argv(random_weights_file), tmp_path)
    try:
        client.start()

        def cancel_when_optimizing(p):
            if p["stage"] == "optimizing":
                client.cancel()

        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                             overrides=ENDLESS,
                                             on_progress=cancel_when_optimizing))
        assert e.value.code == Code.CANCELLED

        # The engine keeps serving after a cancelled job.
        result = in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                                  overrides=TINY))
        assert result.width == 24

        # close() while a job runs: the engine stops the job and exits by itself (status 0,
        # not killed), within close()'s grace period.
        optimizing = threading.Event()
        outcome: dict = {}

        def job():
            try:
                client.stylize(content_image(), [(style_image(), 1.0)], overrides=ENDLESS,
                               on_progress=lambda p: p["stage"] == "optimizing"
                               and optimizing.set())
            except EngineFailed as err:
                outcome["error"] = err

        t = threading.Thread(target=job, daemon=True)
        t.start()
        assert optimizing.wait(WAIT)
        client.close()
        assert client._proc.returncode == 0
        t.join(WAIT)
        assert not t.is_alive() and "error" in outcome
    finally:
        client.close()
    assert "stopping: shutdown requested" in log_text(tmp_path)


PLUGIN = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from nst_engine.bridge.client import PipeClient
    from nst_engine.bridge.wire import RGBAImage
    c = PipeClient(sys.argv[3:], pythonpath=[sys.argv[1]], log_path=sys.argv[2],
                   hello_timeout=120)
    c.start()
    def told(p):
        if p["stage"] == "optimizing":
            print(c.pid, flush=True)
    c.stylize(RGBAImage(8, 8, bytes(256)), [(RGBAImage(8, 8, bytes(range(256))), 1.0)],
              overrides={"iterations": 20000, "max_size": 64, "levels": 1}, on_progress=told)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_plugin_takes_the_engine_down(random_weights_file, tmp_path):
    """GIMP's cancel: the plug-in is SIGKILLed mid-job; its pipe closes and the engine exits."""
    plugin = subprocess.Popen([PY, "-c", PLUGIN, str(ROOT), str(tmp_path / "engine.log"),
                               *serve_argv(random_weights_file)],
                              stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        line = in_thread(plugin.stdout.readline)
        engine_pid = int(line)
        assert _alive(engine_pid)
        plugin.kill()
        plugin.wait(WAIT)

        def engine_gone():
            while _alive(engine_pid):
                threading.Event().wait(0.05)
            return True

        assert in_thread(engine_gone, timeout=30)
    finally:
        plugin.kill()
        plugin.wait()
    assert "end of input" in log_text(tmp_path) or "stopped reading" in log_text(tmp_path)


# ------------------------------------------------------------------------- stdout hygiene, crash

NOISY = textwrap.dedent("""
    # Libraries that print to stdout, from Python and at the file-descriptor level, while the
    # engine imports torch and while it decodes a job's images; and a bug.
    import ctypes, os, sys
    class Noisy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                print("NOISE python print while importing torch")
                os.write(1, b"NOISE fd-1 write while importing torch\\n")
            return None
    sys.meta_path.insert(0, Noisy())
    import PIL.Image
    _frombytes = PIL.Image.frombytes
    def frombytes(*a, **k):
        print("NOISE python print during a job", flush=True)
        os.write(1, b"NOISE fd-1 write during a job\\n")
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None)
            libc.puts(b"NOISE C puts during a job")
            libc.fflush(None)
        return _frombytes(*a, **k)
    PIL.Image.frombytes = frombytes
    # A bug inside the engine, triggered by seed 666 (presets is torch-free: safe to import here).
    import nst_engine.presets
    _resolve = nst_engine.presets.resolve
    def resolve(name=None, overrides=None, **kw):
        if (overrides or {}).get("seed") == 666:
            raise ZeroDivisionError("injected bug")
        return _resolve(name, overrides, **kw)
    nst_engine.presets.resolve = resolve
    from nst_engine.cli import main
    raise SystemExit(main(sys.argv[1:]))
""")


def test_printing_libraries_bug_and_crash(
        random_weights_file, tmp_path):
    argv = [PY, "-c", NOISY, *serve_argv(random_weights_file)[3:]]
    client = make_client(argv, tmp_path)
    try:
        assert client.start()["protocol"] == wire.PROTOCOL_VERSION
        result = in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                                  overrides=TINY))
        assert result.width == 24
        log = log_text(tmp_path)
        for noise in ("python print while importing torch", "fd-1 write while importing torch",
                      "python print during a job", "fd-1 write during a job"):
            assert "NOISE " + noise in log
        if sys.platform.startswith("linux"):
            assert "NOISE C puts during a job" in log

        # An unexpected exception: an "internal" error naming it, the traceback in the log, and
        # the engine goes on serving.
        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                             overrides={**TINY, "seed": 666}))
        assert e.value.code == Code.INTERNAL and "ZeroDivisionError: injected bug" in e.value.message
        assert "Traceback" in log_text(tmp_path) and "injected bug" in log_text(tmp_path)
        assert client._proc.poll() is None

        # The engine dies mid-job (here: killed, as the OOM killer would): reported as a
        # crash with the exit signal, the log path and the log's tail.
        def kill_when_optimizing(p):
            if p["stage"] == "optimizing" and client._proc.poll() is None:
                os.kill(client.pid, signal.SIGKILL)

        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                             overrides=ENDLESS,
                                             on_progress=kill_when_optimizing))
        assert e.value.code == Code.ENGINE_CRASHED
        if sys.platform != "win32":
            assert "signal 9" in e.value.message
        assert "NOISE" in e.value.message  # the tail of this run's log
        assert str(tmp_path / "engine.log") in e.value.user_text()
    finally:
        client.close()


# ------------------------------------------------------------------------- malformed input

TRUNCATED = encode_message({"type": Msg.CANCEL, "id": 1})[:-3]
MALFORMED = {
    "bad magic": (b"GIF89a" + bytes(40), Code.BAD_FRAME),
    "too large": (PREFIX.pack(MAGIC, 20, 0xFFFFFFF0) + b'{"type":"stylize"}  ', Code.TOO_LARGE),
    "bad json": (PREFIX.pack(MAGIC, 9, 0) + b'{"type":]', Code.BAD_JSON),
    "truncated": (TRUNCATED, Code.BAD_FRAME),
}


def test_framing_errors_get_a_reply_and_a_clean_exit(tmp_path):
    """Each on its own engine (started together), with no weights file: a job there reports
    the missing weights, then the broken message is answered and the engine exits."""
    missing = tmp_path / "no-weights.pth"

    def session(name):
        data, code = MALFORMED[name]
        folder = tmp_path / name.replace(" ", "-")
        client = make_client(serve_argv(missing), folder)
        try:
            hello = client.start()
            assert hello["weights"]["status"] == "missing"
            if name == "bad magic":
                with pytest.raises(EngineFailed) as e:
                    client.stylize(content_image(), [(style_image(), 1.0)], overrides=TINY)
                assert e.value.code == "weights_missing" and str(missing) in e.value.message
            send_raw(client, data)
            if name == "truncated":
                client._proc.stdin.close()  # the rest never comes
            reply = next_reply(client)
            assert reply.type == Msg.ERROR and reply.header["code"] == code, reply
            assert reply.header["id"] is None
            assert wait_exit(client) == 3
            # Nothing but messages on stdout: after the error, a clean end of stream.
            assert next_reply(client) is client_module._EOF and client._read_error is None
            assert "Traceback" not in log_text(folder)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(len(MALFORMED)) as pool:
        for f in [pool.submit(session, name) for name in MALFORMED]:
            f.result(timeout=3 * WAIT)


def test_oversize_limit_is_configurable(tmp_path):
    """NST_MAX_PAYLOAD lowers the payload cap: a job bigger than it is refused as too large."""
    env = {**os.environ, "NST_MAX_PAYLOAD": "1000"}
    client = make_client(serve_argv(tmp_path / "none.pth"), tmp_path, env=env)
    try:
        client.start()
        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)]))
        assert e.value.code == Code.TOO_LARGE and "1000" in e.value.message
    finally:
        client.close()


# ------------------------------------------------------------------------- start-up failures

def test_engine_that_never_says_hello(tmp_path):
    argv = [PY, "-c", "import sys, time; print('loading forever', file=sys.stderr, flush=True);"
                      " time.sleep(600)"]
    client = make_client(argv, tmp_path, hello_timeout=2)
    with pytest.raises(EngineFailed) as e:
        client.start()
    assert e.value.code == Code.ENGINE_NOT_STARTED
    assert "loading forever" in e.value.message and "hello_timeout" in e.value.hint
    assert str(tmp_path / "engine.log") in e.value.user_text()
    assert client._proc.poll() is not None  # killed, not left behind


def test_engine_that_exits_at_once(tmp_path):
    argv = [PY, "-c", "import sys; sys.stderr.write('boom: no torch here\\n'); sys.exit(5)"]
    with pytest.raises(EngineFailed) as e:
        make_client(argv, tmp_path).start()
    assert e.value.code == Code.ENGINE_NOT_STARTED
    assert "status 5" in e.value.message and "boom: no torch here" in e.value.message


def test_engine_command_not_found(tmp_path):
    with pytest.raises(EngineFailed) as e:
        make_client([str(tmp_path / "no-python")], tmp_path).start()
    assert e.value.code == Code.ENGINE_NOT_STARTED and "install.py" in e.value.hint


def test_from_config_and_child_environment(tmp_path):
    """GIMP's PYTHONPATH/PYTHONHOME are dropped, the configured path set, the log put in
    log_dir."""
    argv = [PY, "-c", "import os, sys; sys.stderr.write(repr((os.environ.get('PYTHONPATH'), "
                      "os.environ.get('PYTHONHOME'))) + '\\n'); sys.exit(7)"]
    cfg = {"engine_command": argv, "engine_pythonpath": ["/opt/nst/src"],
           "log_dir": str(tmp_path / "logs"), "hello_timeout": 5}
    env = {**os.environ, "PYTHONPATH": "/gimp/lib/python", "PYTHONHOME": "/gimp"}
    client = EngineClient.from_config(cfg, env=env)
    assert client.hello_timeout == 5
    with pytest.raises(EngineFailed) as e:
        client.start()
    assert repr(("/opt/nst/src", None)) in e.value.message and "status 7" in e.value.message
    assert e.value.log_path == str(tmp_path / "logs" / "engine.log")


def test_engine_printing_garbage_is_named(tmp_path):
    with pytest.raises(EngineFailed) as e:
        make_client([PY, "-c", "print('Welcome to the GPU box!')"], tmp_path).start()
    assert e.value.code == Code.ENGINE_NOT_STARTED
    assert "not a protocol message" in e.value.message and "standard output" in e.value.hint


def test_log_is_rotated_when_large(tmp_path):
    log = tmp_path / "engine.log"
    log.write_bytes(b"old\n" * (1 << 20))
    with pytest.raises(EngineFailed):
        make_client([PY, "-c", "raise SystemExit(1)"], tmp_path).start()
    assert (tmp_path / "engine.log.1").stat().st_size == 4 << 20
    assert log.stat().st_size < 1000


def test_list_presets_runs_the_configured_command():
    cfg = {"presets_command": [PY, "-m", "nst_engine", "presets", "--json"],
           "engine_pythonpath": [str(ROOT)]}
    listing = list_presets(cfg, timeout=WAIT)
    names = {p["name"] for p in listing["presets"]}
    assert listing["default"] in names and "quick" in names
    with pytest.raises(EngineFailed) as e:
        list_presets({"presets_command": [PY, "-c", "print('not json')"]}, timeout=WAIT)
    assert e.value.code == Code.PRESETS_UNAVAILABLE
