"""The plug-in in one GIMP profile: its script, the modules and locale folder beside it and the
nst_bridge copy of nst_engine/bridge, copied (or linked, for developers) only where they differ."""

from __future__ import annotations

import os
import stat
import sys

from .errors import InstallError
from .files import Manifest, copy_file, link_path, sync_tree
from .layout import BRIDGE_PKG, BRIDGE_SRC, PLUGIN_MODULES, PLUGIN_SRC
from .log import say
from .profiles import Profile


def install_plugin(profile: Profile, manifest: Manifest, link: bool) -> str:
    """Put the plug-in and its nst_bridge copy into one profile. Returns what happened."""
    if not PLUGIN_SRC.is_file():
        raise InstallError(f"This checkout has no plug-in file {PLUGIN_SRC}.",
                           "Use a complete Style Transfer checkout (git clone or release "
                           "archive).")
    dst = profile.plugin_dir
    existed = dst.exists()
    manifest.make_tree(dst)
    script = dst / PLUGIN_SRC.name
    bridge = dst / BRIDGE_PKG
    if link:
        mode = stat.S_IMODE(PLUGIN_SRC.stat().st_mode)
        if mode & 0o111 != 0o111 and sys.platform != "win32":
            os.chmod(PLUGIN_SRC, mode | 0o755)  # GIMP runs the link's target: it needs the bit
        try:
            changes = link_path(PLUGIN_SRC, script, manifest)
            changes += link_path(BRIDGE_SRC, bridge, manifest)
            for module in PLUGIN_MODULES:
                changes += link_path(module, dst / module.name, manifest)
        except OSError as e:
            if sys.platform != "win32":
                raise
            # Windows allows symlinks only to administrators or in developer mode.
            say(f"      cannot make symlinks here ({e.strerror or e}); copying instead")
            link = False
    if not link:
        changes = copy_file(PLUGIN_SRC, script, manifest, mode=0o755)
        changes += sync_tree(BRIDGE_SRC, bridge, manifest)
        for module in PLUGIN_MODULES:
            copy = sync_tree if module.is_dir() else copy_file
            changes += copy(module, dst / module.name, manifest)
    if not existed:
        return "installed" + (" (linked)" if link else "")
    return ("updated" if changes else "up to date") + (" (linked)" if link else "")
