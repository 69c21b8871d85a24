# The user's side of gui_preview.py: works the Style Transfer dialog through X (xdotool's
# XTest key presses; no window manager under Xvfb, so the dialog is raised and focused
# directly) and watches the previews the plug-in writes to $NST_PREVIEW_DUMP_DIR. Writes what it
# did and saw to OUT.driver.json.
#   usage: gui_preview_driver.py test|shot OUT
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
#: The strength the test sets (the dialog opens with the default, 1).
NEW_STRENGTH = "8"
T0 = time.monotonic()
found = {"log": []}


def log(text):
    found["log"].append(f"{time.monotonic() - T0:6.1f} {text}")


def x(*args):
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60)
    log(f"xdotool {' '.join(args)}: rc {done.returncode} {done.stderr.strip()[:200]}")
    return done.stdout.strip()


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


def strength_of(p):
    return p["settings"]["overrides"].get("strength")


def capture(window, path):
    x("windowraise", window)
    time.sleep(1.5)  # let the raised window repaint
    done = subprocess.run(f"xwd -silent -id {window} | convert xwd:- '{path}'", shell=True,
                          capture_output=True, text=True, timeout=60)
    found["capture_rc"] = done.returncode
    log(f"capture {path}: rc {done.returncode} {done.stderr.strip()[:200]}")


try:
    window = x("search", "--sync", "--name", "^Style Transfer$").split("\n")[0]
    found["window"] = window
    x("windowraise", window)
    first = wait_for(previews, FIRST_PREVIEW_S, "first preview")
    if first and MODE == "shot":
        capture(window, OUT + ".png")
    elif first:
        # Stre_ngth: Alt+N puts the focus in the field; the new value is typed over the old,
        # Tab leaves the field (committing it). Typing a value is idempotent, so a key press
        # GIMP missed is sent again.
        for attempt in range(3):
            x("windowfocus", window, "key", "--delay", "80", "alt+n", "ctrl+a")
            x("type", "--delay", "80", NEW_STRENGTH)
            x("key", "--delay", "80", "Tab")
            redone = wait_for(lambda: [p for p in previews()
                                       if strength_of(p) == float(NEW_STRENGTH)],
                              NEXT_PREVIEW_S if attempt else 30.0, "preview with new strength")
            if redone:
                break
        capture(window, OUT + ".png")
    found["previews"] = previews()
finally:
    # Cancel: Escape in a dialog is its Cancel button.
    x("windowfocus", found.get("window") or "0", "key", "Escape")
    with open(OUT + ".driver.json", "w") as f:
        json.dump(found, f, indent=1)
