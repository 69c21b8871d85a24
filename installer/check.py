"""``python install.py --check``: each part of an installation OK, or what is wrong and how to
fix it, then a test job through the bridge. What it knows about the engine it asks the engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from nst_engine.bridge import config as nst_config

from .engine import (Engine, missing_modules, missing_packages_error, package_versions,
                     python_version)
from .errors import InstallError
from .files import Manifest, engine_hash, manifest_path
from .layout import BRIDGE_PKG, BRIDGE_SRC, CHECKOUT, PLUGIN_DIR, PLUGIN_MODULES, PLUGIN_SRC
from .log import say
from .profiles import FLATPAK_APP, Profile, find_profiles, flatpak_paths, no_profile_error
from .selfcheck import self_check


class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, part: str, text: str) -> None:
        say(f"  OK    {part}: {text}")

    def note(self, part: str, text: str) -> None:
        say(f"  NOTE  {part}: {text}")

    def bad(self, part: str, text: str, fix: str) -> None:
        self.problems += 1
        say(f"  FAIL  {part}: {text}")
        if fix:
            say(f"        fix: {fix}")


def check_plugin(profile: Profile, r: Report) -> None:
    part = f"plug-in in {profile.label()}"
    fix = "run `python install.py` again" + (f" --gimp-dir \"{profile.path}\""
                                             if profile.version == "custom" else "")
    script = profile.plugin_dir / PLUGIN_SRC.name
    bridge = profile.plugin_dir / BRIDGE_PKG
    if not script.is_file():
        return r.bad(part, f"{script} is missing", fix)
    if sys.platform != "win32" and not os.access(script, os.X_OK):
        return r.bad(part, f"{script} is not executable, so GIMP ignores it",
                     f"`chmod +x \"{script}\"` or {fix}")
    if not (bridge / "__init__.py").is_file():
        return r.bad(part, f"{bridge} is missing (the plug-in imports it)", fix)
    linked = script.is_symlink()
    if script.resolve().read_bytes() != PLUGIN_SRC.read_bytes():
        return r.bad(part, f"{script} differs from this checkout's plug-in", fix)
    copies = [(src, profile.plugin_dir / src.relative_to(PLUGIN_DIR))
              for module in PLUGIN_MODULES
              for src in (sorted(f for f in module.rglob("*") if f.is_file())
                          if module.is_dir() else [module])]
    copies += [(src, bridge / src.name) for src in sorted(BRIDGE_SRC.glob("*.py"))]
    for src, dst in copies:
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            return r.bad(part, f"{dst} is missing or differs from this checkout's "
                               f"{src.relative_to(CHECKOUT)}", fix)
    r.ok(part, "present, executable, nst_bridge current" + (" (linked)" if linked else ""))


def check_engine(cfg: dict[str, Any], manifest: Manifest, r: Report) -> bool:
    """The engine's Python, its packages and the weights. Returns whether a job can run."""
    python = cfg["engine_command"][0]
    engine = Engine(python, cfg.get("engine_pythonpath"))
    version = python_version(python)
    if version is None:
        r.bad("engine Python", f"{python} does not run",
              "run `python install.py` again (add --python PATH if you installed with it)")
        return False
    r.ok("engine Python", f"{python} (Python {'.'.join(map(str, version))})")
    report = engine.doctor("--quick")
    if report is None:
        r.bad("engine packages", "the nst_engine package is not importable",
              "run `python install.py` again")
        return False
    if missing_modules(report):
        e = missing_packages_error(python, report)
        r.bad("engine packages", e.message, e.hint)
        return False
    r.ok("engine packages", package_versions(report))
    stale = (manifest.data.get("engine") or {}).get("engine_hash") != engine_hash()
    if stale and manifest.exists:
        r.note("engine sources", "the installed engine is older than this checkout; "
               "`python install.py` updates it")
    wpath = cfg.get("weights")
    report = engine.doctor(*(("--weights", wpath) if wpath else ()))
    w = (report or {}).get("weights") or {}
    if "ok" not in w:
        r.bad("weights", "checking them crashed the engine", "see `python -m nst_engine "
              "doctor` with the engine's Python")
        return False
    if not w["ok"]:
        r.bad("weights", w["error"],
              "run `python install.py` again to download them, or `python install.py "
              "--weights FILE` with a VGG19 file you have (offline)")
        return False
    state = "verified" if w["verified"] else "NOT verified"
    r.ok("weights", f"{wpath or 'default cache'} ({w['kind']}, {state})")
    if w.get("notice"):
        r.note("weights", w["notice"])
    return True


def check() -> int:
    r = Report()
    say("Style Transfer for GIMP: checking the installation")
    manifest = Manifest(manifest_path())
    # Configuration
    cfg = None
    cpath = nst_config.config_path()
    try:
        cfg = nst_config.load_config(cpath)
        r.ok("configuration", str(cpath))
    except nst_config.ConfigError as e:
        r.bad("configuration", str(e), "run `python install.py` again to rewrite it")
    engine_ok = cfg is not None and check_engine(cfg, manifest, r)
    # GIMP profiles: the ones installed into, plus any found since then
    recorded = [Profile(Path(p["path"]), p["version"], p.get("flatpak", False))
                for p in manifest.data.get("profiles", [])]
    found, looked = find_profiles()
    if not recorded and not found:
        r.bad("GIMP", no_profile_error(looked).message, no_profile_error(looked).hint)
    for profile in recorded:
        check_plugin(profile, r)
    for profile in found:
        if profile.path not in {p.path for p in recorded}:
            if (profile.plugin_dir / PLUGIN_SRC.name).is_file():
                check_plugin(profile, r)
            else:
                r.note(f"{profile.label()}", "found, but the plug-in was not installed there; "
                       "`python install.py` adds it")
        if profile.flatpak:
            fpath, _ = flatpak_paths(profile)
            try:
                nst_config.load_config(fpath)
                r.ok("Flatpak configuration", f"{fpath} (the engine starts through "
                     "flatpak-spawn --host; it needs `flatpak override --user "
                     f"--talk-name=org.freedesktop.Flatpak {FLATPAK_APP}`)")
            except nst_config.ConfigError as e:
                r.bad("Flatpak configuration", str(e), "run `python install.py` again")
    # The job itself
    if cfg is not None and engine_ok:
        try:
            r.ok("self-check", self_check(cfg))
        except InstallError as e:
            r.bad("self-check", e.message, e.hint)
    else:
        r.bad("self-check", "not run", "fix the problems above first")
    if r.problems:
        say(f"{r.problems} problem{'s' if r.problems > 1 else ''} found.")
        return 1
    say("All parts OK. In GIMP: Filters > Style Transfer…")
    return 0
