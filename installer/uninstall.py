"""``python install.py --uninstall``: remove what the manifest says the installer created, and
nothing else; folders that now hold someone else's files are kept and named."""

from __future__ import annotations

from pathlib import Path

from nst_engine.bridge import config as nst_config

from .engine import stop_warm_engine
from .errors import write_error
from .files import Manifest, manifest_path, remove
from .log import say


def uninstall() -> int:
    mpath = manifest_path()
    manifest = Manifest(mpath)
    if not manifest.exists:
        say(f"Nothing to uninstall: there is no install record ({mpath}).")
        return 0
    stop_warm_engine(remove_folder=True)
    # Written by the engine, not the installer, but ours all the same: without it the data
    # folder could not go.
    cache = nst_config.cpu_precision_cache_path()
    if cache.is_file():
        cache.unlink()
        say(f"  removed {cache}")
    kept = []
    # Newest first: a file goes before the folder that holds it, and the data folder (which
    # holds this record) comes after everything in it.
    for entry in reversed(manifest.created()):
        p = Path(entry["path"])
        if p == mpath:
            continue
        if p == mpath.parent:
            mpath.unlink(missing_ok=True)
        try:
            if entry["kind"] == "dir":
                if not p.is_dir() or p.is_symlink():
                    continue
                try:
                    p.rmdir()
                except OSError:
                    kept.append(p)
                    continue
            elif p.exists() or p.is_symlink():
                remove(p)
            else:
                continue
        except OSError as e:
            raise write_error(e) from None
        say(f"  removed {p}")
    mpath.unlink(missing_ok=True)
    ours = (nst_config.config_dir(), nst_config.data_dir())
    for p in kept:  # ~/.local and the like are kept silently: other programs use them too
        if any(p == o or o in p.parents for o in ours):
            say(f"  kept {p}: it now holds files the installer did not put there")
    engine = manifest.data.get("engine") or {}
    if engine.get("mode") == "python":
        say(f"  left alone: the interpreter you gave ({engine.get('python')})")
    say("Style Transfer is uninstalled. Restart GIMP to drop it from the Filters menu.")
    return 0
