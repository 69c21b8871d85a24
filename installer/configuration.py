"""config.json, which the plug-in reads to start the engine (see nst_engine/bridge/config.py):
what goes in it, and writing it only when that changes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nst_engine.bridge import config as nst_config
from nst_engine.bridge.client import DEFAULT_HELLO_TIMEOUT

from .engine import Engine
from .files import Manifest


def build_config(engine: Engine, weights: Path, device: str, flatpak: bool = False,
                 keep_warm: float = nst_config.DEFAULT_KEEP_WARM) -> dict[str, Any]:
    """What the plug-in reads (see bridge/config.py). A Flatpak GIMP gets the same engine
    started on the host through ``flatpak-spawn --host`` (which passes no environment, so
    PYTHONPATH goes on its command line; --watch-bus ends the engine with the plug-in)."""
    serve = engine.argv("serve", "--weights", str(weights))
    presets = engine.argv("presets", "--json")
    cfg: dict[str, Any] = {"engine_command": serve, "presets_command": presets,
                           "weights": str(weights), "device": device,
                           "log_dir": str(nst_config.default_log_dir()),
                           "hello_timeout": int(DEFAULT_HELLO_TIMEOUT),
                           "keep_warm": keep_warm}
    if flatpak:
        prefix = ["flatpak-spawn", "--host", "--watch-bus"]
        if engine.pythonpath:
            prefix.append("--env=PYTHONPATH=" + os.pathsep.join(engine.pythonpath))
        cfg["engine_command"] = prefix + serve
        cfg["presets_command"] = prefix + presets
    elif engine.pythonpath:
        cfg["engine_pythonpath"] = list(engine.pythonpath)
    return cfg


def write_config(cfg: dict[str, Any], path: Path, manifest: Manifest) -> bool:
    """save_config only when the contents differ. Returns whether it wrote."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current == {"version": nst_config.CONFIG_VERSION, **cfg}:
        return False
    existed = path.exists()
    manifest.make_dirs(path.parent)
    nst_config.save_config(cfg, path)
    if not existed:
        manifest.record(path, "file")
    return True


def earlier_device() -> str:
    """A device chosen at an earlier install, kept unless --device names another."""
    try:
        return nst_config.load_config().get("device") or "auto"
    except nst_config.ConfigError:
        return "auto"


def earlier_keep_warm() -> float:
    """A keep_warm the user set in config.json survives a re-install; else the default."""
    try:
        earlier = nst_config.load_config()
    except nst_config.ConfigError:
        return nst_config.DEFAULT_KEEP_WARM
    if "keep_warm" not in earlier:
        return nst_config.DEFAULT_KEEP_WARM
    value = nst_config.keep_warm(earlier)
    return int(value) if value == int(value) else value
