"""GIMP 3 profiles: the ``3.N`` folders found on each platform (Flatpak included), or the ones
given with --gimp-dir; where a Flatpak GIMP's plug-in reads its configuration."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from nst_engine.bridge import config as nst_config

from .errors import InstallError
from .layout import PLUGIN_NAME

FLATPAK_APP = "org.gimp.GIMP"
_PROFILE_RE = re.compile(r"^3\.(\d+)$")


@dataclass(frozen=True)
class Profile:
    path: Path
    version: str          # "3.0", "3.2", … or "custom" for a --gimp-dir that is named otherwise
    flatpak: bool = False

    @property
    def plugin_dir(self) -> Path:
        return self.path / "plug-ins" / PLUGIN_NAME

    def label(self) -> str:
        kind = " (Flatpak)" if self.flatpak else ""
        name = f"GIMP {self.version}" if self.version != "custom" else "GIMP profile"
        return f"{name}{kind} at {self.path}"


def profile_roots(platform: str | None = None, environ: dict[str, str] | None = None,
                  home: Path | None = None) -> list[tuple[Path, bool]]:
    """The folders that hold GIMP's ``3.N`` profiles on this platform: (folder, is Flatpak)."""
    platform = platform or sys.platform
    environ = dict(os.environ) if environ is None else environ
    home = home or Path(environ.get("HOME") or Path.home())
    if platform == "win32":
        appdata = environ.get("APPDATA") or str(home / "AppData" / "Roaming")
        return [(Path(appdata) / "GIMP", False)]
    if platform == "darwin":
        return [(home / "Library" / "Application Support" / "GIMP", False)]
    xdg = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [(Path(xdg) / "GIMP", False),
            (home / ".var" / "app" / FLATPAK_APP / "config" / "GIMP", True)]


def _version_key(version: str) -> tuple[int, int]:
    m = _PROFILE_RE.match(version)
    return (3, int(m.group(1))) if m else (99, 0)


def find_profiles(platform: str | None = None, environ: dict[str, str] | None = None,
                  home: Path | None = None) -> tuple[list[Profile], list[Path]]:
    """Every GIMP 3.x profile (3.0, 3.2 and later minors), and the folders looked in."""
    environ = dict(os.environ) if environ is None else environ
    found: list[Profile] = []
    looked: list[Path] = []
    # GIMP 3 reads its profile from GIMP3_DIRECTORY when that is set.
    custom = environ.get("GIMP3_DIRECTORY")
    if custom:
        looked.append(Path(custom))
        if Path(custom).is_dir():
            found.append(Profile(Path(custom), _version_of(Path(custom)), _is_flatpak(custom)))
    for root, flatpak in profile_roots(platform, environ, home):
        looked.append(root)
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir(), key=lambda p: _version_key(p.name)):
            if d.is_dir() and _PROFILE_RE.match(d.name):
                found.append(Profile(d, d.name, flatpak))
    return found, looked


def _version_of(path: Path) -> str:
    return path.name if _PROFILE_RE.match(path.name) else "custom"


def _is_flatpak(path: str | Path) -> bool:
    return f"/.var/app/{FLATPAK_APP}/" in Path(path).as_posix() + "/"


def profiles_from_args(dirs: list[str]) -> list[Profile]:
    out = []
    for d in dirs:
        p = Path(d).expanduser().resolve()
        if p.name == "plug-ins":  # the plug-ins folder itself was given: its profile is meant
            p = p.parent
        if not p.is_dir():
            raise InstallError(f"--gimp-dir {d}: no such folder.",
                               "Give GIMP's profile folder (the one holding plug-ins/, e.g. "
                               "~/.config/GIMP/3.0); GIMP shows it in Edit > Preferences > "
                               "Folders. Start GIMP 3 once so it creates its profile.")
        out.append(Profile(p, _version_of(p), _is_flatpak(p)))
    return out


def no_profile_error(looked: list[Path]) -> InstallError:
    where = "\n".join(f"    {p}" for p in looked)
    return InstallError(
        "No GIMP 3 profile found. Looked for 3.N folders in:\n" + where,
        "Start GIMP 3 once so it creates its profile, then run the installer again; or name "
        "the profile yourself: `python install.py --gimp-dir ~/.config/GIMP/3.0` (repeatable; "
        "GIMP shows the folder in Edit > Preferences > Folders).")


def flatpak_paths(profile: Profile) -> tuple[Path, Path]:
    """Inside GIMP's Flatpak sandbox XDG_CONFIG_HOME / XDG_DATA_HOME point into the app's own
    folders, so the plug-in there reads its config.json (and writes logs) under them."""
    app = profile.path.parent.parent.parent  # …/.var/app/org.gimp.GIMP/config/GIMP/3.N
    return (app / "config" / nst_config.APP / nst_config.CONFIG_FILE,
            app / "data" / nst_config.APP / "logs")


FLATPAK_WARNING = (
    "GIMP here is a Flatpak: its sandbox cannot start the engine's Python on the host by itself. "
    "The plug-in's configuration for it starts the engine through `flatpak-spawn --host`, which "
    "needs one permission, given once with:\n"
    f"    flatpak override --user --talk-name=org.freedesktop.Flatpak {FLATPAK_APP}")
