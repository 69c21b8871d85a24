#!/usr/bin/env python3
"""Style Transfer for GIMP 3.0.x and 3.2.x: repaint a layer, or the selected part of it, in the
style of another layer (VGG19 neural style transfer), or every frame of an animation.

This file only registers the two procedures with GIMP and hands each to its module:
``nst_still`` (Filters > Style Transfer…) and ``nst_animation`` (Filters > Style Transfer
(Animation)…). What they share is in ``nst_gimp`` (GIMP and the installation), ``nst_arguments``
(registration), ``nst_dialog`` and ``nst_preview`` (the dialog), and ``nst_core`` (the logic
that needs no GIMP). The engine runs in its own process, reached through ``nst_bridge``; both
are copied beside this file by install.py. Nothing imports this file (its name has a hyphen:
GIMP's rule is folder name = file name).
"""

import os
import sys

# The plug-in's modules and nst_bridge live beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402

import nst_animation  # noqa: E402
import nst_core  # noqa: E402
import nst_still  # noqa: E402

#: Procedure name -> the function that creates it.
PROCEDURES = {nst_still.PROC_NAME: nst_still.create_procedure,
              nst_animation.PROC_NAME: nst_animation.create_procedure}


class StyleTransfer(Gimp.PlugIn):
    def do_set_i18n(self, name):
        # The plug-in's own catalogue: domain nst_core.DOMAIN in the locale/ folder beside
        # this file, as GIMP's own Python plug-ins name theirs. GIMP warns at every start when
        # that folder is missing, not when it holds no catalogue (English only).
        return True, nst_core.DOMAIN, "locale"

    def do_query_procedures(self):
        return list(PROCEDURES)

    def do_create_procedure(self, name):
        return PROCEDURES[name](self, name)


if __name__ == "__main__":
    Gimp.main(StyleTransfer.__gtype__, sys.argv)
