# Runs inside GIMP (python-fu-eval batch), twice per test: NST_WARM_PHASE=1 in a first GIMP
# session, then 2 in a second one started by the same command (tests/gimp/test_warm_e2e.py).
# Records facts about the warm engine into $NST_E2E_OUT.<phase>; the test asserts on them.
import hashlib
import json
import os
import signal
import stat
import subprocess
import time
import traceback

import gi

gi.require_version("Gegl", "0.4")
from gi.repository import Gegl  # noqa: E402

PROC = "plug-in-nst-style-transfer"
FMT = "R'G'B'A u8"
PHASE = os.environ["NST_WARM_PHASE"]
OUT = os.environ["NST_E2E_OUT"] + "." + PHASE
RUN_DIR = os.environ["NST_RUNTIME_DIR"]
HOME = os.environ["HOME"]
CONFIG = os.path.join(HOME, ".config", "nst-style-transfer", "config.json")
LOG = os.path.join(HOME, ".local", "share", "nst-style-transfer", "logs", "engine.log")
FAST = {"preset": "quick", "iterations": 3, "max-size": 64, "seed": 7}
facts = {}


def save():
    with open(OUT + ".tmp", "w") as f:
        json.dump(facts, f, indent=1)
    os.replace(OUT + ".tmp", OUT)


def set_keep_warm(seconds):
    with open(CONFIG, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["keep_warm"] = seconds
    with open(CONFIG, "w", encoding="utf-8") as f:
        json.dump(cfg, f)


def layer(image, name, w, h, fn):
    lay = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0,
                         Gimp.LayerMode.NORMAL)
    image.insert_layer(lay, None, 0)
    data = bytearray()
    for y in range(h):
        for x in range(w):
            data += bytes(fn(x, y))
    buf = lay.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), FMT, bytes(data))
    buf.flush()
    return lay


def log_size():
    return os.path.getsize(LOG) if os.path.exists(LOG) else 0


def engine_pid_in_log(since):
    """The warm engine pid the plug-in's relay connected to in this run, or None."""
    with open(LOG, "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    pids = [int(line.rsplit("pid ", 1)[1]) for line in text.splitlines()
            if "connected to the warm engine, pid " in line]
    return pids[-1] if pids else None


def stylize():
    """One plug-in run on a fresh image: status, the result's pixel hash, the engine's pid."""
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    style = layer(image, "painting", 32, 32,
                  lambda x, y: (255 if (x // 3) % 2 else 20, 40, 255 if (y // 4) % 2 else 60,
                                255))
    src = layer(image, "photo", 48, 40, lambda x, y: ((x * 5) % 256, (y * 6) % 256, 90, 255))
    since = log_size()
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [src])
    cfg.set_property("style-layer", style)
    for k, v in FAST.items():
        cfg.set_property(k, v)
    res = proc.run(cfg)
    out = {"status": res.index(0).value_nick,
           "message": res.index(1) if res.length() > 1 else None,
           "engine_pid": engine_pid_in_log(since)}
    result = image.get_layers()[0]
    if result.get_id() != src.get_id():
        w, h = result.get_width(), result.get_height()
        data = bytes(result.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, FMT,
                                             Gegl.AbyssPolicy.NONE))
        out["pixels"] = hashlib.sha256(data).hexdigest()
    image.delete()
    return out


def engine_pids():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if b"nst_engine" in cmd and (b"serve" in cmd or b"attach" in cmd):
                out.append(int(pid))
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
    set_keep_warm(60)
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
    since = log_size()
    facts["while_busy"] = stylize()
    with open(LOG, "rb") as f:
        f.seek(since)
        facts["while_busy"]["waited"] = b"waits for another client's job" in f.read()
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
    set_keep_warm(0)
    facts["cold"] = stylize()
    time.sleep(0.5)
    facts["left_after_cold"] = engine_pids()


try:
    phase1() if PHASE == "1" else phase2()
except Exception:
    facts["exception"] = traceback.format_exc()
save()
