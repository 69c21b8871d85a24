"""The warm engine: ``attach`` + ``serve --listen`` driven through the plug-in's client code.

Each test gets its own private folder (NST_RUNTIME_DIR, short: a socket path has ~104 bytes)
and stops its engine at the end, so no test meets a real warm engine or leaves one behind.
Random-weight files, tiny images, CPU; every wait has a timeout; no timing assertions.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nst_engine.bridge import config, warm
from nst_engine.bridge.client import DirectClient, EngineClient, EngineFailed, PipeClient
from nst_engine.bridge.warm import warm_argv
from nst_engine.bridge.wire import Code
from tests.test_serve import (ENDLESS, PY, ROOT, TINY, WAIT, _alive, content_image, in_thread,
                              style_image)

pytestmark = pytest.mark.skipif(not warm.supported() or not sys.platform.startswith("linux"),
                                reason="the warm engine is POSIX-only; these tests read /proc")


def _wait_gone(pid: int, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def runtime(monkeypatch):
    """A private runtime folder of this test's own; the engine in it is stopped afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nstw"))
    folder = parent / "run"
    monkeypatch.setenv("NST_RUNTIME_DIR", str(folder))
    monkeypatch.setenv(warm.BUILD_ENV, "test-build")  # others may touch the checkout mid-test
    # Several tests compare results of two engines: each measures its CPU precision anew when
    # the machine is busy (and caches nothing then), so one may pick bfloat16 and the other
    # float32. One precision for every engine these tests start.
    monkeypatch.setenv("NST_ENGINE_CPU_BF16", "0")
    yield folder
    if folder.exists():
        warm.stop_engine(folder, force=True)
    shutil.rmtree(parent, ignore_errors=True)


def cfg_for(weights, tmp_path, keep_warm=60) -> dict:
    return {"engine_command": [PY, "-m", "nst_engine", "serve", "--weights", str(weights),
                               "--device", "cpu"],
            "engine_pythonpath": [str(ROOT)], "log_dir": str(tmp_path / "logs"),
            "hello_timeout": WAIT, "keep_warm": keep_warm}


def run_job(cfg, overrides=TINY, direct=True, **kw):
    """One plug-in run: a new client, start, one job, close. (engine pid, result).
    ``direct=False``: the engine command behind a wrapper (``env``, as ``ssh`` would be), so
    through attach even when a warm engine runs."""
    if not direct:
        cfg = {**cfg, "engine_command": ["env", *cfg["engine_command"]]}
    client = EngineClient.from_config(cfg, **kw)
    with client:
        client.start()
        out = in_thread(lambda: client.stylize(content_image(), [(style_image(), 1.0)],
                                               overrides=overrides))
        return client.engine_pid, out


def log_text(tmp_path) -> str:
    return (tmp_path / "logs" / "engine.log").read_text("utf-8", "replace")


# ------------------------------------------------------------------------------ no engine needed

def test_warm_argv_turns_serve_into_attach_also_behind_ssh_and_flatpak():
    local = [PY, "-m", "nst_engine", "serve", "--weights", "w.pth"]
    assert warm_argv(local, 600, 120) == [PY, "-m", "nst_engine", "attach", "--weights", "w.pth",
                                          "--keep-warm", "600", "--hello-timeout", "120"]
    ssh = ["ssh", "-T", "gpu-box", "/opt/venv/bin/python", "-m", "nst_engine", "serve",
           "--device", "cuda"]
    assert warm_argv(ssh, 30, 60, fresh=True)[:8] == ssh[:6] + ["attach", "--device"]
    assert warm_argv(ssh, 30, 60, fresh=True)[-1] == "--fresh"
    flatpak = ["flatpak-spawn", "--host", "--watch-bus", PY, "-m", "nst_engine", "serve"]
    assert warm_argv(flatpak, 600, 120)[6] == "attach"
    assert warm_argv(local, 0, 120) is None  # keep_warm 0: today's per-run engine
    assert warm_argv([PY, "my_engine.py", "serve"], 600, 120) is None  # not ours to rewrite


def test_from_config_runs_attach_when_no_warm_engine_runs(runtime, tmp_path):
    cfg = cfg_for("w.pth", tmp_path)
    client = EngineClient.from_config(cfg)
    assert isinstance(client, PipeClient) and client.warm
    assert client.argv == warm_argv(cfg["engine_command"], 60, WAIT)
    fresh = EngineClient.from_config(cfg, fresh=True)
    assert isinstance(fresh, PipeClient) and fresh.argv[-1] == "--fresh"
    cold = EngineClient.from_config(cfg, keep_warm=0)
    assert isinstance(cold, PipeClient) and not cold.warm
    assert cold.argv == cfg["engine_command"]


def test_keep_warm_from_config():
    assert config.keep_warm({}) == config.DEFAULT_KEEP_WARM > 0
    assert config.keep_warm({"keep_warm": 0}) == 0
    assert config.keep_warm({"keep_warm": 12.5}) == 12.5
    for bad in (-1, "600", True, None, float("nan")):
        assert config.keep_warm({"keep_warm": bad}) == 0  # unusable: the safe, per-run engine


def test_private_folder_is_made_0700_and_unsafe_ones_are_refused(runtime):
    folder = warm.private_dir()
    assert folder == runtime
    st = folder.lstat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    os.chmod(folder, 0o755)  # ours but open: closed again
    warm.private_dir()
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700
    folder.rmdir()
    link_target = runtime.parent / "elsewhere"
    link_target.mkdir(mode=0o700)
    folder.symlink_to(link_target)
    with pytest.raises(warm.WarmUnavailable, match="symbolic link"):
        warm.private_dir()
    folder.unlink()
    if os.getuid() == 0:  # root can make a folder that belongs to someone else
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
        with pytest.raises(warm.WarmUnavailable, match="another user"):
            warm.private_dir()
        folder.rmdir()


def test_socket_path_too_long_is_refused(monkeypatch):
    monkeypatch.setenv("NST_RUNTIME_DIR", "/tmp/" + "x" * 120)
    with pytest.raises(warm.WarmUnavailable, match="longer than"):
        warm.private_dir(create=False)


# ------------------------------------------------------------------------------ a real warm engine

def test_runs_reuse_one_engine_and_give_the_cold_engines_pixels(random_weights_file, tmp_path,
                                                                 runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    pid1, first = run_job(cfg)  # attach starts the engine
    pid2, second = run_job(cfg)  # the client connects to it directly
    pid2b, second_b = run_job(cfg, direct=False)  # through attach, as over ssh
    assert pid1 == pid2 == pid2b and _alive(pid1)  # later runs found the first run's engine
    assert first == second == second_b
    # Folder and socket: the user's alone.
    assert stat.S_IMODE(runtime.lstat().st_mode) == 0o700
    sock = (runtime / warm.SOCKET_NAME).lstat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_IMODE((runtime / warm.LOCK_NAME).lstat().st_mode) == 0o600
    assert (runtime / warm.LOCK_NAME).read_text() == str(pid1)
    # The same seed on a cold, per-run engine (keep_warm 0): the same pixels.
    cold_pid, cold = run_job(cfg, keep_warm=0)
    assert cold_pid != pid1 and not _alive(cold_pid) and cold == first
    log = log_text(tmp_path)
    assert log.count(f"connected to the warm engine, pid {pid1}") == 3
    assert log.count(f"client[{os.getpid()}]: connected to the warm engine") == 1  # direct
    # While it runs, a local command reaches it directly; a fresh start or a wrapper does not.
    with EngineClient.from_config(cfg) as direct:
        assert isinstance(direct, DirectClient) and direct.warm
    assert isinstance(EngineClient.from_config(cfg, fresh=True), PipeClient)
    wrapped = {**cfg, "engine_command": ["env", *cfg["engine_command"]]}
    assert isinstance(EngineClient.from_config(wrapped), PipeClient)

    # SIGKILLed between runs: the next run starts a new engine and succeeds.
    os.kill(pid1, signal.SIGKILL)
    assert _wait_gone(pid1)
    pid3, third = run_job(cfg)
    assert pid3 != pid1 and third == first

    # install.py's stop: the engine ends and its socket goes.
    assert warm.stop_engine(runtime) == pid3
    assert _wait_gone(pid3) and not (runtime / warm.SOCKET_NAME).exists()
    assert warm.stop_engine(runtime) is None


def test_second_client_waits_its_turn_and_can_cancel_while_waiting(random_weights_file,
                                                                   tmp_path, runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    busy = EngineClient.from_config(cfg)
    clients = [busy]
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
                outcome["busy"] = e.code

        t = threading.Thread(target=long_job, daemon=True)
        t.start()
        assert optimizing.wait(WAIT)

        # A job sent now waits, is told so, and a cancel while it waits is answered at once
        # (the long job is still running).
        waiter = EngineClient.from_config(cfg)
        clients.append(waiter)
        assert isinstance(waiter, DirectClient)  # the engine runs: no relay needed
        waiter.start()
        assert waiter.engine_pid == busy.engine_pid
        stages: list = []

        def cancel_when_waiting(p):
            stages.append(p["stage"])
            if p["stage"] == "waiting":
                waiter.cancel()

        with pytest.raises(EngineFailed) as e:
            in_thread(lambda: waiter.stylize(content_image(), [(style_image(), 1.0)],
                                             overrides=TINY, on_progress=cancel_when_waiting))
        assert e.value.code == Code.CANCELLED and stages == ["waiting"]
        assert t.is_alive()

        # Another waits, then gets its own result once the running job ends.
        third = EngineClient.from_config(cfg)
        clients.append(third)
        third.start()
        seen: list = []
        box: dict = {}
        waiting = threading.Event()

        def job3():
            box["out"] = third.stylize(content_image(30, 10), [(style_image(), 1.0)],
                                       overrides=TINY,
                                       on_progress=lambda p: (seen.append(p["stage"]),
                                                              p["stage"] == "waiting"
                                                              and waiting.set()))
        t3 = threading.Thread(target=job3, daemon=True)
        t3.start()
        assert waiting.wait(WAIT)
        busy.cancel()
        t.join(WAIT)
        t3.join(WAIT)
        assert outcome.get("busy") == Code.CANCELLED
        assert (box["out"].width, box["out"].height) == (30, 10)
        assert seen[0] == "waiting" and seen[-1] == "done"
    finally:
        for c in clients:
            c.close()


KILLED_PLUGIN = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from nst_engine.bridge.client import EngineClient
    from nst_engine.bridge.wire import RGBAImage
    import json
    c = EngineClient.from_config(json.loads(sys.argv[2]))
    c.start()
    def told(p):
        if p["stage"] == "optimizing":
            print(c.engine_pid, c.pid, flush=True)
    c.stylize(RGBAImage(8, 8, bytes(256)), [(RGBAImage(8, 8, bytes(range(256))), 1.0)],
              overrides={"iterations": 20000, "max_size": 64, "levels": 1}, on_progress=told)
""")


@pytest.mark.parametrize("path", ["relay", "direct"])
def test_killed_plugin_cancels_its_job_and_the_engine_stays_warm(random_weights_file, tmp_path,
                                                                  runtime, path):
    import json

    cfg = cfg_for(random_weights_file, tmp_path)
    if path == "direct":
        run_job(cfg)  # an engine runs: the killed plug-in is connected to it directly
    plugin = subprocess.Popen([PY, "-c", KILLED_PLUGIN, str(ROOT), json.dumps(cfg)],
                              stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        engine_pid, relay_pid = in_thread(plugin.stdout.readline).split()
        engine_pid = int(engine_pid)
        assert (relay_pid == "None") == (path == "direct")
        plugin.kill()  # GIMP's Cancel
        plugin.wait(WAIT)
        if path == "relay":
            assert _wait_gone(int(relay_pid), 30)  # the relay saw the end of its input
        deadline = time.monotonic() + WAIT
        while "cancelled" not in log_text(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "job 1: cancelled" in log_text(tmp_path)
    finally:
        plugin.kill()
        plugin.wait()
    assert _alive(engine_pid)
    pid, out = run_job(cfg)
    assert pid == engine_pid and out.width == 24


def test_other_build_is_replaced_and_idle_engine_exits(random_weights_file, tmp_path, runtime,
                                                        monkeypatch):
    cfg = cfg_for(random_weights_file, tmp_path, keep_warm=3)
    old_pid, _ = run_job(cfg)
    monkeypatch.setenv(warm.BUILD_ENV, "an-updated-engine")  # as after install.py
    new_pid, _ = run_job(cfg, direct=False)  # attach compares builds (install.py stops it too)
    assert new_pid != old_pid and _wait_gone(old_pid, 30)
    assert "another version" in log_text(tmp_path)
    # keep_warm 3: three idle seconds later the engine is gone, and so is its socket.
    assert _wait_gone(new_pid, 60)
    assert not (runtime / warm.SOCKET_NAME).exists()
    assert "no job for 3 s" in log_text(tmp_path)


def test_hung_engine_is_replaced(random_weights_file, tmp_path, runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    pid, first = run_job(cfg)
    os.kill(pid, signal.SIGSTOP)  # connects (the kernel queues it) but never answers
    try:
        new_pid, again = run_job(cfg)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert new_pid != pid and again == first and _wait_gone(pid, 30)  # the client killed it
    assert "did not answer" in log_text(tmp_path)


def test_retry_with_a_fresh_engine(random_weights_file, tmp_path, runtime):
    cfg = cfg_for(random_weights_file, tmp_path)
    pid, _ = run_job(cfg)
    fresh_pid, _ = run_job(cfg, fresh=True)
    assert fresh_pid != pid and _wait_gone(pid, 30)
