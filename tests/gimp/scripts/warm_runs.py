# Runs inside GIMP (python-fu-eval batch), twice per test: NST_WARM_PHASE=1 in a first GIMP
# session, then 2 in a second one started by the same command (tests/gimp/test_warm_e2e.py).
# Records facts about the warm engine into $NST_E2E_OUT.<phase>; the test asserts on them.
import os
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.environ["NST_E2E_SCRIPTS"])
from prelude import (FAST, add_layer, engine_log, engine_log_size,  # noqa: E402
                     engine_pids, pixel_hash, recording, run_plugin, set_config, stripes)

from gi.repository import Gimp  # noqa: E402

PHASE = os.environ["NST_WARM_PHASE"]
OUT = os.environ["NST_E2E_OUT"] + "." + PHASE
RUN_DIR = os.environ["NST_RUNTIME_DIR"]
facts = {}


def engine_pid_in_log(since):
    """The warm engine pid the plug-in's relay connected to in this run, or None."""
    pids = [int(line.rsplit("pid ", 1)[1]) for line in engine_log(since).splitlines()
            if "connected to the warm engine, pid " in line]
    return pids[-1] if pids else None


def stylize():
    """One plug-in run on a fresh image: status, the result's pixel hash, the engine's pid."""
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    style = add_layer(image, "painting", 32, 32, stripes)
    src = add_layer(image, "photo", 48, 40, lambda x, y: ((x * 5) % 256, (y * 6) % 256, 90, 255))
    since = engine_log_size()
    out = run_plugin(image, [src], style, **FAST)
    out["engine_pid"] = engine_pid_in_log(since)
    result = image.get_layers()[0]
    if result.get_id() != src.get_id():
        out["pixels"] = pixel_hash(result)
    image.delete()
    return out


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while pid in engine_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid not in engine_pids()


def mode_of(path):
    st = os.lstat(path)
    return {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
            "socket": stat.S_ISSOCK(st.st_mode), "dir": stat.S_ISDIR(st.st_mode)}


# A second client (another GIMP, a batch script): the bridge beside the installed plug-in,
# run by the engine's Python, with a job of its own that takes a few seconds.
OTHER_CLIENT = r"""
import glob, os, sys
sys.path.insert(0, glob.glob(os.path.expanduser('~/.config/GIMP/*/plug-ins/nst-style-transfer'))[0])
from nst_bridge.client import EngineClient
from nst_bridge.config import load_config
from nst_bridge.wire import RGBAImage
seen = []
def told(p):
    if p['stage'] not in seen:
        seen.append(p['stage'])
        if p['stage'] == 'optimizing':
            print('optimizing', flush=True)
with EngineClient.from_config(load_config()) as c:
    c.start()
    out = c.stylize(RGBAImage(20, 10, bytes(800)), [(RGBAImage(8, 8, bytes(range(256))), 1.0)],
                    overrides={'iterations': 120, 'max_size': 64, 'levels': 1, 'seed': 3},
                    on_progress=told)
print('result', out.width, out.height, c.engine_pid, ' '.join(seen), flush=True)
"""


def phase1():
    set_config(keep_warm=60)
    facts["first"] = stylize()
    facts["second"] = stylize()
    facts["folder"] = mode_of(RUN_DIR)
    facts["socket"] = mode_of(os.path.join(RUN_DIR, "engine.sock"))
    facts["lock"] = mode_of(os.path.join(RUN_DIR, "engine.lock"))
    facts["my_uid"] = os.getuid()
    # A second client's job runs; this run waits for it, then gets its own result.
    other = subprocess.Popen(["/usr/bin/python3", "-c", OTHER_CLIENT], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    first_line = other.stdout.readline().decode().strip()
    since = engine_log_size()
    facts["while_busy"] = stylize()
    facts["while_busy"]["waited"] = "waits for another client's job" in engine_log(since)
    facts["other_client"] = [first_line] + other.communicate(timeout=300)[0].decode().split("\n")
    facts["other_rc"] = other.returncode


def phase2():
    facts["second_gimp"] = stylize()  # the engine of the first GIMP session, still warm
    pid = facts["second_gimp"]["engine_pid"]
    if pid:
        os.kill(pid, signal.SIGKILL)
        facts["killed_gone"] = wait_gone(pid)
    facts["after_kill"] = stylize()
    # keep_warm 0: a per-run engine, gone when the plug-in has ended.
    new = facts["after_kill"]["engine_pid"]
    if new:
        os.kill(new, signal.SIGTERM)
        facts["stopped_gone"] = wait_gone(new)
    set_config(keep_warm=0)
    facts["cold"] = stylize()
    time.sleep(0.5)
    facts["left_after_cold"] = engine_pids()


with recording(facts, OUT):
    phase1() if PHASE == "1" else phase2()
