"""Where the installer's sources are in this checkout, and the names they are installed under."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "nst-style-transfer"
PLUGIN_SRC = CHECKOUT / "gimp_plugin" / PLUGIN_NAME / (PLUGIN_NAME + ".py")
PLUGIN_DIR = PLUGIN_SRC.parent
#: The plug-in's translations (``locale/<lang>/LC_MESSAGES/nst-style-transfer.mo``): GIMP binds
#: the plug-in's gettext domain to this folder beside it, and warns at every start without it.
PLUGIN_LOCALE = PLUGIN_DIR / "locale"
#: What the plug-in's folder holds besides its script, installed beside it: every module there
#: (found, not listed, so a new one cannot be left out) and the locale folder.
PLUGIN_MODULES = (*sorted(p for p in PLUGIN_DIR.glob("*.py") if p != PLUGIN_SRC), PLUGIN_LOCALE)
BRIDGE_SRC = CHECKOUT / "nst_engine" / "bridge"
#: The name the plug-in imports the bridge under (a copy of nst_engine/bridge beside it).
BRIDGE_PKG = "nst_bridge"
ENGINE_SRC = CHECKOUT / "nst_engine"
