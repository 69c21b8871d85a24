# Runs inside a GIMP tree (tree.py), with the tree's /usr/bin/python3: starts a private Xvfb,
# runs GIMP's GUI binary on a python-fu-eval batch script with DISPLAY pointing at it, and ends
# both by their process ids, whatever happens. Prints what it did; the batch script writes the
# findings itself. Processes still alive at the end (there should be none) are listed in
# $NST_E2E_OUT.procs, so the test can tell a leak.
#   usage: gui_run.py GIMP_GUI_BINARY SCRIPT.py TIMEOUT_S
import os
import select
import signal
import subprocess
import sys
import time

binary, script, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = os.environ["NST_E2E_OUT"]
GIMP_ARGS = ["-n", "-d", "-f", "--batch-interpreter", "python-fu-eval", "-b", "-", "--quit"]


def start_xvfb():
    """Xvfb on a free display (it picks one and writes its number to -displayfd)."""
    r, w = os.pipe()
    log = open(out + ".xvfb.log", "wb")
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=log, stderr=log,
                            start_new_session=True)
    os.close(w)
    number, deadline = b"", time.monotonic() + 30
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            chunk = os.read(r, 16)
            if not chunk:
                break
            number += chunk
    os.close(r)
    if not number.strip().isdigit():
        stop(proc)
        sys.exit(f"Xvfb did not start: {open(out + '.xvfb.log', 'rb').read()[-2000:]!r}")
    return proc, ":" + number.decode().strip()


def stop(proc, grace=5.0):
    """End proc's process group (GIMP's plug-ins with it): TERM, then KILL after grace."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:  # GIMP exited; children it left in its group still go
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def others():
    """Processes other than this one (the tree runs us in our own PID namespace)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (os.getpid(), os.getppid(), 1):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cmd:
                found.append(f"{pid} {cmd}")
    return found


t0 = time.monotonic()
xvfb, display = start_xvfb()
print(f"Xvfb on {display} after {time.monotonic() - t0:.1f}s", flush=True)
rc = None
try:
    with open(script, "rb") as stdin:
        gimp = subprocess.Popen([binary, *GIMP_ARGS], stdin=stdin,
                                env={**os.environ, "DISPLAY": display},
                                start_new_session=True)
    try:
        rc = gimp.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"GIMP still running after {timeout:.0f}s: stopping it", flush=True)
    finally:
        stop(gimp)
finally:
    stop(xvfb)
time.sleep(0.2)
with open(out + ".procs", "w") as f:
    f.write("\n".join(others()))
print(f"GIMP rc {rc} after {time.monotonic() - t0:.1f}s", flush=True)
sys.exit(0 if rc == 0 else 1)
