"""Where things live on each platform, and the configuration file the installer writes.

Shared by the engine, the plug-in and ``install.py`` (standard library only), so every side
agrees on one set of paths. Each folder can be moved with an environment variable, which is how
tests keep to temporary folders.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

APP = "nst-style-transfer"
CONFIG_FILE = "config.json"
CONFIG_VERSION = 1
#: The preset used when none is named (by the CLI, the plug-in, a batch script).
DEFAULT_PRESET = "balanced"
#: ``keep_warm``: seconds a loaded engine waits for the next job after its last one, reachable
#: by later plug-in runs; 0 = the engine ends with the plug-in (as on Windows, always).
DEFAULT_KEEP_WARM = 600


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def config_dir() -> Path:
    """Configuration (``config.json``, ``presets/``). ``NST_CONFIG_DIR`` overrides."""
    if os.environ.get("NST_CONFIG_DIR"):
        return Path(os.environ["NST_CONFIG_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or _home() / "AppData" / "Roaming") / APP
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config") / APP


def data_dir() -> Path:
    """Large files: the engine's venv and the weights. ``NST_DATA_DIR`` overrides."""
    if os.environ.get("NST_DATA_DIR"):
        return Path(os.environ["NST_DATA_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or _home() / "AppData" / "Local") / APP
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_DATA_HOME") or _home() / ".local" / "share") / APP


def user_presets_dir() -> Path:
    """User presets, which add to and override the built-in ones. ``NST_PRESETS_DIR`` overrides."""
    if os.environ.get("NST_PRESETS_DIR"):
        return Path(os.environ["NST_PRESETS_DIR"])
    return config_dir() / "presets"


def weights_dir() -> Path:
    return data_dir() / "weights"


def cpu_precision_cache_path() -> Path:
    """The engine's measured CPU precision choice (``nst_engine.cpu_precision``): a cache the
    engine writes itself, which ``install.py --uninstall`` removes with the rest."""
    return data_dir() / "cpu-precision.json"


def default_log_dir() -> Path:
    return data_dir() / "logs"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def runtime_dir() -> Path:
    """The private folder of the warm engine's socket (``bridge/warm.py`` creates it 0700 and
    checks it). ``NST_RUNTIME_DIR`` overrides, which is how tests get one each."""
    if os.environ.get("NST_RUNTIME_DIR"):
        return Path(os.environ["NST_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):  # per user, 0700, emptied at logout (systemd)
        return Path(os.environ["XDG_RUNTIME_DIR"]) / APP
    # A short path: a socket's path must stay under ~104 bytes. tempfile knows macOS's per-user
    # TMPDIR; elsewhere this is /tmp, shared, so warm.py refuses a folder someone else made.
    import tempfile
    uid = os.getuid() if hasattr(os, "getuid") else 0  # Windows has no warm engine
    return Path(tempfile.gettempdir()) / f"{APP}-{uid}"


def keep_warm(cfg: dict[str, Any]) -> float:
    """``cfg["keep_warm"]`` in seconds (absent: DEFAULT_KEEP_WARM; not a number ≥ 0: 0)."""
    value = cfg.get("keep_warm", DEFAULT_KEEP_WARM)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return 0.0
    return float(value)


class ConfigError(Exception):
    """The configuration file is missing or unreadable; the message says what to run."""


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read ``config.json`` as the installer wrote it.

    Keys: ``version``; ``engine_command`` (argv list, started without a shell);
    ``engine_pythonpath`` (list of folders set as the engine's PYTHONPATH, or absent);
    ``presets_command`` (argv that prints ``presets --json``, for the plug-in's preset list);
    ``weights`` (path or null); ``device`` (auto/cpu/cuda/mps); ``log_dir``;
    ``hello_timeout`` (seconds to wait for the engine's hello); ``keep_warm`` (seconds a loaded
    engine waits for the next run; 0 = it ends with the plug-in; see ``keep_warm()``).
    """
    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Style Transfer is not set up: {path} does not exist. "
                          "Run `python install.py` from the Style Transfer folder.") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"Cannot read the Style Transfer configuration {path}: {e}. "
                          "Run `python install.py` again to rewrite it.") from None
    cmd = cfg.get("engine_command") if isinstance(cfg, dict) else None
    if not (isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd)):
        raise ConfigError(f"The Style Transfer configuration {path} has no valid "
                          "'engine_command' (a list of strings). "
                          "Run `python install.py` again to rewrite it.")
    return cfg


def save_config(cfg: dict[str, Any], path: Path | None = None) -> Path:
    """Write atomically, so an interrupted install never leaves half a file."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": CONFIG_VERSION, **cfg}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path
