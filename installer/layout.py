"""Where the installer's sources are in this checkout, and the names they are installed under."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "nst-style-transfer"
PLUGIN_SRC = CHECKOUT / "gimp_plugin" / PLUGIN_NAME / (PLUGIN_NAME + ".py")
#: Modules the plug-in imports from its own folder (installed beside it).
PLUGIN_MODULES = (PLUGIN_SRC.parent / "nst_preview.py", PLUGIN_SRC.parent / "nst_animation.py")
BRIDGE_SRC = CHECKOUT / "nst_engine" / "bridge"
#: The name the plug-in imports the bridge under (a copy of nst_engine/bridge beside it).
BRIDGE_PKG = "nst_bridge"
ENGINE_SRC = CHECKOUT / "nst_engine"
