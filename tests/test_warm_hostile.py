"""The warm engine against hostile local peers and planted files (issue 23's eight faults).

Nothing in the runtime folder is trusted by its name; no process is signalled on a file's word;
a foreign listener, a peer that never reads, floods of jobs, connections or announced payloads,
a replacement during someone's job, and running out of descriptors each cost at most the
offender's own session. Each test gets its own runtime folder (``runtime`` from test_warm) and
stops what it started; every wait has a generous timeout; no timing assertions.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nst_engine.bridge import warm, wire
from nst_engine.bridge.client import DirectClient, EngineClient, EngineFailed, PipeClient
from nst_engine.bridge.wire import Code, Msg, encode_message, read_message
from nst_engine.server import jobs as jobs_module
from tests.test_serve import (ENDLESS, PY, ROOT, TINY, WAIT, _alive, content_image, in_thread,
                              make_client, next_reply, send_raw, serve_argv, style_image)
from tests.test_warm import _wait_gone, cfg_for, log_text, run_job, runtime  # noqa: F401

pytestmark = pytest.mark.skipif(not warm.supported() or not sys.platform.startswith("linux"),
                                reason="the warm engine is POSIX-only; these tests read /proc")


def stylize_message(rid, w=2, h=2, overrides=TINY, payload: bytes | None = None) -> bytes:
    header = {"type": Msg.STYLIZE, "id": rid, "protocol": wire.PROTOCOL_VERSION,
              "preset": None, "overrides": overrides, "device": None,
              "images": [{"role": "content", "width": w, "height": h},
                         {"role": "style", "width": 2, "height": 2, "weight": 1.0}]}
    size = (w * h + 4) * 4
    if payload is None:
        payload = bytes(i * 7 % 256 for i in range(size))
    return encode_header_only(header, size) + payload


def encode_header_only(header: dict, payload_len: int) -> bytes:
    return wire.encode_header(header, payload_len)


def raw_connect(folder: Path, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(str(folder / warm.SOCKET_NAME))
    return s


def read_one(s: socket.socket, timeout: float = WAIT):
    s.settimeout(timeout)
    f = s.makefile("rb", buffering=0)
    try:
        return read_message(f, accept=wire.ENGINE_TYPES)
    finally:
        f.close()


def sleeper() -> subprocess.Popen:
    """One of the user's processes that nobody may signal."""
    return subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])


HOLD_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0); os.write(fd, sys.argv[2].encode())
    print("locked", flush=True)
    time.sleep(600)
""")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# ------------------------------------------------------------ 1. planted files: no link followed

def test_a_repaired_folder_is_emptied_and_a_planted_lock_link_is_never_followed(runtime):
    victim = runtime.parent / "precious.txt"
    victim.write_text("the user's work")
    runtime.mkdir()
    os.chmod(runtime, 0o777)  # found open before our first run
    (runtime / warm.LOCK_NAME).symlink_to(victim)
    (runtime / warm.SOCKET_NAME).symlink_to(victim)
    (runtime / "planted").mkdir()
    (runtime / "planted" / "x").write_text("x")
    assert warm.private_dir() == runtime
    assert (runtime.lstat().st_mode & 0o777) == 0o700
    assert os.listdir(runtime) == []  # what we did not make is gone
    assert victim.read_text() == "the user's work"

    # In a private folder too, a link where the lock should be is refused, never followed.
    (runtime / warm.LOCK_NAME).symlink_to(victim)
    lock = warm.EngineLock(runtime)
    with pytest.raises(warm.WarmUnavailable, match="symbolic link"):
        lock.acquire()
    assert lock.holder() == 0 and warm.stop_engine(runtime) is None
    (runtime / warm.LOCK_NAME).unlink()
    os.link(victim, runtime / warm.LOCK_NAME)  # a hard link to the user's file
    with pytest.raises(warm.WarmUnavailable, match="hard links"):
        lock.acquire()
    assert victim.read_text() == "the user's work"
    (runtime / warm.LOCK_NAME).unlink()
    assert lock.acquire()  # a clean folder: the lock is ours, a regular 0600 file
    lock.release()


def test_a_planted_lock_link_in_an_open_folder_still_gives_a_run(random_weights_file, tmp_path,
                                                                 runtime):
    victim = runtime.parent / "precious.txt"
    victim.write_text("the user's work")
    runtime.mkdir()
    os.chmod(runtime, 0o777)
    (runtime / warm.LOCK_NAME).symlink_to(victim)
    pid, out = run_job(cfg_for(random_weights_file, tmp_path))
    assert out.width == 24 and _alive(pid)
    assert victim.read_text() == "the user's work"
    lock = runtime / warm.LOCK_NAME
    assert not lock.is_symlink() and lock.read_text() == str(pid)


# ------------------------------------------------------------ 2. no signal on a file's word

def test_a_lock_naming_another_process_never_gets_it_signalled(runtime):
    runtime.mkdir(mode=0o700)
    victim = sleeper()
    holder = None
    try:
        lock_path = runtime / warm.LOCK_NAME
        lock_path.write_text(str(victim.pid))  # a planted pid, nobody holds the lock
        assert warm.EngineLock(runtime).holder() is None
        assert warm.stop_engine(runtime) is None
        assert warm.stop_engine(runtime, force=True) is None
        # Held, but by a process that is not the warm engine, naming another one.
        lock_path.unlink()
        holder = subprocess.Popen([PY, "-c", HOLD_LOCK, str(lock_path), str(victim.pid)],
                                  stdout=subprocess.PIPE, text=True)
        assert in_thread(holder.stdout.readline).strip() == "locked"
        assert warm.EngineLock(runtime).holder() == 0  # held by a stranger: never signalled
        assert warm.stop_engine(runtime, force=True) is None
        time.sleep(0.3)
        assert victim.poll() is None and holder.poll() is None
    finally:
        for p in (victim, holder):
            if p is not None:
                p.kill()
                p.wait()


def test_fresh_retry_with_a_strangers_lock_runs_a_per_run_engine(random_weights_file, tmp_path,
                                                                  runtime):
    runtime.mkdir(mode=0o700)
    victim = sleeper()
    holder = subprocess.Popen([PY, "-c", HOLD_LOCK, str(runtime / warm.LOCK_NAME),
                               str(victim.pid)], stdout=subprocess.PIPE, text=True)
    try:
        assert in_thread(holder.stdout.readline).strip() == "locked"
        pid, out = run_job(cfg_for(random_weights_file, tmp_path), fresh=True)
        assert out.width == 24
        assert _wait_gone(pid, 30)  # a per-run engine: it ended with its client
        assert victim.poll() is None and holder.poll() is None
        text = log_text(tmp_path)
        assert "running one for this client only" in text and "Traceback" not in text
    finally:
        for p in (victim, holder):
            p.kill()
            p.wait()


# ------------------------------------------------------------ 3. a foreign listener

class ForeignListener:
    """Another program of the user's listening on engine.sock; ``hello``: what it answers."""

    def __init__(self, folder: Path, hello: bytes | None) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(folder / warm.SOCKET_NAME))
        self.sock.listen(8)
        self.hello = hello
        self.conns: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.hello:
                try:
                    conn.sendall(self.hello)
                except OSError:  # the client read enough and hung up first: its right
                    pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_foreign_listener_gets_no_direct_client(runtime, tmp_path):
    cfg = cfg_for("w.pth", tmp_path)
    options = warm.direct_options(cfg["engine_command"])
    fake = encode_message({"type": Msg.HELLO, "protocol": wire.PROTOCOL_VERSION,
                           "pid": os.getpid(),
                           "warm": {"keep_warm": 60, "key": "x", "options": options}})
    foreign = ForeignListener(runtime, fake)
    try:
        assert warm.connect_direct(options, 60) is None  # a perfect hello, but no engine
        assert not isinstance(EngineClient.from_config(cfg), DirectClient)
    finally:
        foreign.close()


@pytest.mark.parametrize("answer", ["silent", "garbage"])
def test_a_foreign_listener_is_replaced_without_a_traceback(random_weights_file, tmp_path,
                                                            runtime, answer):
    foreign = ForeignListener(runtime, None if answer == "silent" else b"HTTP/1.1 200 OK\r\n")
    try:
        pid, out = run_job(cfg_for(random_weights_file, tmp_path), direct=False)
        assert out.width == 24 and _alive(pid)
        text = log_text(tmp_path)
        assert "not the warm engine" in text and "Traceback" not in text
        assert f"connected to the warm engine, pid {pid}" in text
    finally:
        foreign.close()


# ------------------------------------------------------------ 4. a peer that never reads

def test_a_peer_that_never_reads_costs_only_its_own_job(random_weights_file, tmp_path, runtime,
                                                        monkeypatch):
    monkeypatch.setenv("NST_WRITE_DEADLINE", "2")
    cfg = cfg_for(random_weights_file, tmp_path, keep_warm=5)
    pid, _ = run_job(cfg)
    silent = raw_connect(runtime, rcvbuf=4096)
    try:
        assert read_one(silent).type == Msg.HELLO
        # A 700x700 result (1.9 MB) is far more than the socket buffers hold.
        silent.sendall(stylize_message("big", 700, 700))
        deadline = time.monotonic() + WAIT
        while "client stopped reading" not in log_text(tmp_path) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        # The others go on, on the same engine.
        pid2, out = run_job(cfg)
        assert pid2 == pid and out.width == 24
        assert "the client stopped reading (it did not read for 2 s)" in log_text(tmp_path)
        # keep_warm goes on counting: 5 idle seconds later the engine is gone.
        assert _wait_gone(pid, 60)
    finally:
        silent.close()


# ------------------------------------------------------------ 5. bounded queues

def test_one_client_cannot_queue_more_than_its_share(random_weights_file, tmp_path):
    client = make_client(serve_argv(random_weights_file), tmp_path)
    client.start()
    try:
        for rid in range(1, 7):
            send_raw(client, stylize_message(f"q{rid}", overrides=ENDLESS))
        busy = []
        deadline = time.monotonic() + WAIT
        while len(busy) < 2:
            assert time.monotonic() < deadline, f"no busy answer; errors: {busy}"
            reply = next_reply(client)
            if reply.type == Msg.ERROR:
                busy.append((reply.header["id"], reply.header["code"]))
        assert busy == [("q5", Code.BUSY), ("q6", Code.BUSY)]
        send_raw(client, encode_message({"type": Msg.CANCEL, "id": None}))
        cancelled = set()
        while len(cancelled) < 4:  # the four it took end as cancelled, not busy
            reply = next_reply(client)
            if reply.type == Msg.ERROR:
                assert reply.header["code"] == Code.CANCELLED
                cancelled.add(reply.header["id"])
        assert cancelled == {"q1", "q2", "q3", "q4"}
        out = in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                               overrides=TINY))
        assert out.width == 24  # the engine goes on
    finally:
        client.close()


class _FakeSession:
    def send(self, header, *parts):
        return True

    def run_job(self, request, cancel):
        pass


def test_the_shared_queue_is_bounded():
    q = jobs_module.Jobs()
    request = wire.Message({"type": Msg.STYLIZE, "id": 1}, b"")
    sessions = [_FakeSession() for _ in range(jobs_module.MAX_QUEUED_JOBS + 1)]
    taken = [q.submit(s, request, threading.Event()) for s in sessions]
    assert taken == [True] * jobs_module.MAX_QUEUED_JOBS + [False]


# ------------------------------------------------------------ 6. memory and connections

def test_payload_memory_is_reserved_as_it_arrives_not_on_the_headers_word(
        random_weights_file, tmp_path, runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    pid, _ = run_job(cfg)
    before = rss_mb(pid)
    liars = []
    try:
        for i in range(3):  # each announces 256 MiB and sends 16 bytes
            s = raw_connect(runtime)
            assert read_one(s).type == Msg.HELLO
            s.sendall(encode_header_only(
                {"type": Msg.STYLIZE, "id": i, "protocol": wire.PROTOCOL_VERSION,
                 "preset": None, "overrides": {}, "device": None,
                 "images": [{"role": "content", "width": 8192, "height": 4096},
                            {"role": "style", "width": 8192, "height": 4096, "weight": 1}]},
                256 << 20) + bytes(16))
            liars.append(s)
        time.sleep(1.0)
        pid2, out = run_job(cfg)
        assert pid2 == pid and out.width == 24
        assert rss_mb(pid) - before < 128  # was +770 MB when reserved on the header's word
    finally:
        for s in liars:
            s.close()


def test_past_the_payload_budget_a_request_is_busy_and_the_engine_goes_on(random_weights_file,
                                                                          tmp_path):
    client = make_client(serve_argv(random_weights_file), tmp_path,
                         env={**os.environ, jobs_module.PAYLOAD_BUDGET_ENV: "200000"})
    client.start()
    try:
        send_raw(client, stylize_message("big", 300, 300))  # 360 kB > 200 kB
        reply = next_reply(client)
        assert (reply.type, reply.header["id"], reply.header["code"]) == \
            (Msg.ERROR, "big", Code.BUSY)
        assert "as much image data" in reply.header["message"]
        out = in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                               overrides=TINY))
        assert out.width == 24
    finally:
        client.close()


def test_connections_are_bounded_and_the_next_one_is_told_busy(random_weights_file, tmp_path,
                                                               runtime):
    from nst_engine.server.listen import MAX_CONNECTIONS

    cfg = cfg_for(random_weights_file, tmp_path)
    pid, _ = run_job(cfg)
    conns = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = raw_connect(runtime)
            assert read_one(s).type == Msg.HELLO
            conns.append(s)
        extra = raw_connect(runtime)
        conns.append(extra)
        first = read_one(extra)
        assert (first.type, first.header["code"]) == (Msg.ERROR, Code.BUSY)
        # The relay of a new run meets a full engine: a per-run engine, not a failure.
        pid2, out = run_job(cfg, direct=False)
        assert out.width == 24 and pid2 != pid and _wait_gone(pid2, 30)
        assert "busy" in log_text(tmp_path)
        for s in conns:
            s.close()
        conns.clear()
        deadline = time.monotonic() + WAIT
        while True:  # the sessions end as their sockets close
            pid3, out = run_job(cfg)
            if pid3 == pid or time.monotonic() > deadline:
                break
        assert pid3 == pid and _alive(pid)
    finally:
        for s in conns:
            s.close()


# ------------------------------------------------------------ 7. replacing never breaks a job

@pytest.mark.parametrize("newcomer", ["other keep_warm", "attach --fresh"])
def test_replacing_the_engine_lets_a_running_job_finish(random_weights_file, tmp_path, runtime,
                                                        newcomer):
    cfg = cfg_for(random_weights_file, tmp_path)
    busy = EngineClient.from_config(cfg)
    try:
        busy.start()
        optimizing = threading.Event()
        outcome: dict = {}

        def long_job():
            try:
                busy.stylize(content_image(), [(style_image(), 1.0)], overrides=ENDLESS,
                             on_progress=lambda p: p["stage"] == "optimizing"
                             and optimizing.set())
            except EngineFailed as e:
                outcome["code"], outcome["text"] = e.code, e.user_text()

        t = threading.Thread(target=long_job, daemon=True)
        t.start()
        assert optimizing.wait(WAIT)
        old = busy.engine_pid
        if newcomer == "attach --fresh":
            pid, out = run_job(cfg, fresh=True)
        else:
            pid, out = run_job({**cfg, "keep_warm": 30})
        assert out.width == 24 and pid != old
        assert t.is_alive() and _alive(old)  # the other client's job still runs
        busy.cancel()
        t.join(WAIT)
        assert outcome.get("code") == Code.CANCELLED, outcome  # not engine_crashed
        assert _wait_gone(old, 30)  # and then the replaced engine ends
        assert "let go" in log_text(tmp_path)
    finally:
        busy.close()
        warm.stop_engine(runtime, force=True)


# ------------------------------------------------------------ 8. out of descriptors

def test_running_out_of_descriptors_does_not_end_the_engine(random_weights_file, tmp_path,
                                                            runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    pid, _ = run_job(cfg)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    conns = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
        for _ in range(6):  # a burst of idle connections: accept() meets EMFILE
            conns.append(raw_connect(runtime))
        deadline = time.monotonic() + WAIT
        while "Too many open files" not in log_text(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "Too many open files" in log_text(tmp_path)
        assert _alive(pid)
    finally:
        for s in conns:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    pid2, out = run_job(cfg)
    assert pid2 == pid and out.width == 24


# ------------------------------------------------------------ the lost engine, in words

FAKE_RELAY = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from nst_engine.bridge.wire import encode_message, PROTOCOL_VERSION
    os.write(1, encode_message({"type": "hello", "protocol": PROTOCOL_VERSION, "pid": 1}))
    os.read(0, 12)  # the job begins
    os._exit(75)  # attach's EXIT_NO_ENGINE: the warm engine vanished
""")


def test_a_lost_warm_engine_is_said_in_words(tmp_path):
    relay = PipeClient([PY, "-c", FAKE_RELAY, str(ROOT)], warm=True,
                       log_path=tmp_path / "engine.log", hello_timeout=WAIT)
    with relay:
        relay.start()
        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: relay.stylize(content_image(), [(style_image(), 1.0)]))
    assert e.value.code == Code.ENGINE_CRASHED
    assert "connection to the warm style transfer engine was lost" in e.value.message
    assert "status 75" not in e.value.user_text()

    ours, theirs = socket.socketpair()
    direct = DirectClient(["x"], ours, {"type": "hello", "protocol": wire.PROTOCOL_VERSION,
                                        "pid": 1}, log_path=tmp_path / "engine.log")

    def engine_goes():
        theirs.recv(12)
        theirs.close()

    threading.Thread(target=engine_goes, daemon=True).start()
    with direct:
        direct.start()
        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: direct.stylize(content_image(), [(style_image(), 1.0)]))
    assert e.value.code == Code.ENGINE_CRASHED
    assert "connection to the warm style transfer engine was lost" in e.value.message
    assert "closed its output" not in e.value.message
