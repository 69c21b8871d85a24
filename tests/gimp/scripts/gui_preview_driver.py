# The user's side of gui_preview.py and gui_animation_preview.py: works the Style Transfer
# dialog through X (xdotool's XTest key presses; no window manager under Xvfb, so the dialog is
# raised and focused directly) and watches the previews the plug-in writes to
# $NST_PREVIEW_DUMP_DIR. Writes what it did and saw to OUT.driver.json.
#   usage: gui_preview_driver.py shot|cancel|ok|animation|selection OUT
#   animation: the Style Transfer (Animation) dialog: Iterations 2, a preview, strength 0, a
#   preview, OK (a tiny run on the preview's engine).
#   selection: the still dialog over a selection: Iterations 2, one preview, Cancel.
import glob
import json
import os
import subprocess
import sys
import time

MODE, OUT = sys.argv[1], sys.argv[2]
DUMP = os.environ["NST_PREVIEW_DUMP_DIR"]
#: A cold engine start plus a preview on a loaded 2-core machine fits well within these.
FIRST_PREVIEW_S, NEXT_PREVIEW_S = 240.0, 180.0
#: What the test types: the dialog opens with the defaults (iterations 0 = the preset's,
#: strength 1).
TEST_ITERATIONS, NEW_STRENGTH = "6", "0"
T0 = time.monotonic()
found = {"log": []}


def log(text):
    found["log"].append(f"{time.monotonic() - T0:6.1f} {text}")


def x(*args):
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60)
    log(f"xdotool {' '.join(args)}: rc {done.returncode} {done.stderr.strip()[:200]}")
    return done.stdout.strip()


TITLE = "^Style Transfer \\(Animation\\)$" if MODE == "animation" else "^Style Transfer$"


def find_dialog(seconds=FIRST_PREVIEW_S):
    """The dialog's window id. ``xdotool search`` fails outright (BadWindow) when a window
    vanishes while it walks the tree, e.g. the previous dialog's as its plug-in exits: then an
    empty id would focus nothing and every key press would be lost, so search again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ids = x("search", "--onlyvisible", "--name", TITLE).split()
        if ids:
            return ids[0]
        time.sleep(0.5)
    raise RuntimeError(f"no visible {TITLE!r} window within {seconds:.0f} s")


def focus(window):
    """Give the dialog the keyboard (no window manager: nobody else does) and check it has it."""
    for _ in range(20):
        x("windowfocus", window)
        if x("getwindowfocus", "-f") == window:
            return
        time.sleep(0.25)
    log(f"focus: window {window} did not get the keyboard")


def previews():
    out = []
    for path in sorted(glob.glob(os.path.join(DUMP, "preview-*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def wait_for(test, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = test()
        if got:
            log(f"{what}: yes")
            return got
        time.sleep(0.25)
    log(f"{what}: not within {seconds:.0f} s")
    return None


def capture(window, path):
    x("windowraise", window)
    time.sleep(1.5)  # let the raised window repaint
    done = subprocess.run(f"xwd -silent -id {window} | convert xwd:- '{path}'", shell=True,
                          capture_output=True, text=True, timeout=60)
    found["capture_rc"] = done.returncode
    log(f"capture {path}: rc {done.returncode} {done.stderr.strip()[:200]}")


def set_field(window, mnemonic, value, wanted, what, waits):
    """Type ``value`` into the field whose label has ``mnemonic`` (Alt+key puts the focus in
    it; the new value is typed over the old; Tab leaves the field, committing it), then wait
    for a preview that ``wanted`` accepts. Typing a value is idempotent, so a key press GIMP
    missed is sent again after each of ``waits`` (seconds) but the last."""
    for wait in waits:
        focus(window)
        x("key", "--delay", "80", mnemonic, "ctrl+a")
        x("type", "--delay", "80", value)
        x("key", "--delay", "80", "Tab")
        done = wait_for(lambda: [p for p in previews() if wanted(p)], wait, what)
        if done:
            return done
    return None


def overrides(p):
    return p["settings"]["overrides"]


try:
    window = find_dialog()
    found["window"] = window
    x("windowraise", window)
    if MODE == "shot":
        if wait_for(previews, FIRST_PREVIEW_S, "first preview"):
            capture(window, OUT + ".png")
    elif MODE == "cancel":
        # Fewer steps keep the test short; typed while the automatic preview is on its way,
        # it also cancels that one (a setting changed).
        first = set_field(window, "alt+i", TEST_ITERATIONS,
                          lambda p: overrides(p)["iterations"] == int(TEST_ITERATIONS),
                          "preview with fewer steps", (60.0, FIRST_PREVIEW_S, FIRST_PREVIEW_S))
        if first:
            set_field(window, "alt+n", NEW_STRENGTH,
                      lambda p: overrides(p)["strength"] == float(NEW_STRENGTH),
                      "preview with new strength", (30.0, NEXT_PREVIEW_S, NEXT_PREVIEW_S))
        capture(window, OUT + ".png")
    elif MODE == "selection":  # one short preview, then Cancel (below)
        set_field(window, "alt+i", "2", lambda p: overrides(p)["iterations"] == 2,
                  "preview with 2 steps", (60.0, FIRST_PREVIEW_S, FIRST_PREVIEW_S))
    elif MODE == "animation":  # previews of the first frame, then a tiny run: OK
        if set_field(window, "alt+i", "2", lambda p: overrides(p)["iterations"] == 2,
                     "preview with 2 steps", (60.0, FIRST_PREVIEW_S, FIRST_PREVIEW_S)):
            if set_field(window, "alt+n", NEW_STRENGTH, lambda p: overrides(p)["iterations"] == 2
                         and overrides(p)["strength"] == float(NEW_STRENGTH),
                         "preview with new strength", (30.0, NEXT_PREVIEW_S, NEXT_PREVIEW_S)):
                focus(window)
                x("key", "alt+o")  # _OK
                found["pressed_ok"] = True
    else:  # ok: a tiny full run, once the preview has started its engine
        if set_field(window, "alt+x", "64", lambda p: overrides(p)["max_size"] == 64,
                     "preview at 64 px", (60.0, FIRST_PREVIEW_S, FIRST_PREVIEW_S)):
            if set_field(window, "alt+i", "2", lambda p: overrides(p)["max_size"] == 64
                         and overrides(p)["iterations"] == 2,
                         "preview with 2 steps", (30.0, NEXT_PREVIEW_S, NEXT_PREVIEW_S)):
                focus(window)
                x("key", "alt+o")  # _OK
                found["pressed_ok"] = True
    found["previews"] = previews()
finally:
    if not found.get("pressed_ok"):
        # Cancel: Escape in a dialog is its Cancel button.
        if found.get("window"):
            focus(found["window"])
        x("key", "Escape")
    with open(OUT + ".driver.json", "w") as f:
        json.dump(found, f, indent=1)
