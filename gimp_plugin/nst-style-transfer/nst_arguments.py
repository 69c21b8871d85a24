"""Registration both procedures share: what every procedure of the plug-in has (image types,
sensitivity, menu, attribution) and the style arguments, in the contract's order (PRODUCT.md),
with the preset list asked of the engine once per plug-in process. The numbers' ranges come from
``nst_core.ARGUMENT_RANGES`` (the engine's, through the generated ``nst_settings``).

Any exception while GIMP creates a procedure silently drops it from the PDB, so everything here
that asks the installation falls back instead of raising.
"""

import json
import os
import sys

from gi.repository import Gimp, GLib, GObject

import nst_core
from nst_core import _
from nst_gimp import bridge

#: Seconds the preset list may take at registration (it runs the engine's torch-free
#: ``presets --json``); past it the combo holds only the default preset.
PRESET_LIST_TIMEOUT = 15.0
#: The fallback when nst_bridge is missing (a broken install; a run then says so).
FALLBACK_PRESET = "balanced"
READWRITE = GObject.ParamFlags.READWRITE


def new_procedure(plugin, name, run, texts, sensitivity):
    """An image procedure under Filters for RGB and gray images, by the project. ``texts``:
    its menu label, blurb and help, marked with N_() (translated here)."""
    menu_label, blurb, help_text = (_(text) for text in texts)
    proc = Gimp.ImageProcedure.new(plugin, name, Gimp.PDBProcType.PLUGIN, run, None)
    proc.set_image_types("RGB*, GRAY*")
    proc.set_sensitivity_mask(sensitivity)
    proc.set_menu_label(menu_label)
    proc.add_menu_path("<Image>/Filters")
    proc.set_documentation(blurb, help_text, name)
    proc.set_attribution("Style Transfer for GIMP contributors",
                         "Style Transfer for GIMP contributors", "2026")
    return proc


def add_number_argument(proc, name, nick, blurb):
    """An int or double argument (after its default's type) with nst_core's range."""
    low, high, default = nst_core.ARGUMENT_RANGES[name]
    add = proc.add_double_argument if isinstance(default, float) else proc.add_int_argument
    add(name, nick, blurb, low, high, default, READWRITE)


def add_style_arguments(proc):
    """The arguments both procedures share, in the contract's order (PRODUCT.md)."""
    presets, default = _preset_choice()
    # none_ok: with False, GIMP refuses an interactive call that has no style layer yet
    # (a calling error before the dialog opens: checked on 3.0.4); a run asks for one.
    proc.add_layer_argument("style-layer", _("S_tyle layer"),
                            _("The layer whose look (brush strokes, texture, colours) is "
                              "transferred"), True, READWRITE)
    proc.add_choice_argument("preset", _("_Preset"),
                             _("Speed/quality preset (built-in and user presets)"),
                             presets, default, READWRITE)
    add_number_argument(proc, "strength", _("Stre_ngth"),
                        _("How strongly the style shows (1 = the preset's balance)"))
    add_number_argument(proc, "max-size", _("Ma_x size (px, 0 = preset's, -1 = full)"),
                        _("Longest side, in pixels, the optimisation runs at; the result is "
                          "scaled to the layer. 0 = the preset's size (on a GPU: the region's "
                          "own size as far as memory allows); -1 = the region's own size on "
                          "any device (in tiles beyond memory; slow on a CPU)"))
    add_number_argument(proc, "iterations", _("_Iterations (0 = preset's)"),
                        _("Optimiser steps; more is slower and smoother. 0 = the preset's "
                          "number"))
    proc.add_boolean_argument("preserve-colors", _("_Keep original colours"),
                              _("Transfer brightness patterns only and keep the layer's "
                                "colours (off = the preset's setting)"), False, READWRITE)
    add_number_argument(proc, "seed", _("S_eed (-1 = random)"),
                        _("Random seed, for repeatable results; -1 = a new one each run"))
    proc.add_choice_argument("device", _("_Device"),
                             _("Where the engine computes: auto = GPU when there is one"),
                             _device_choice(), "auto", READWRITE)
    proc.add_layer_argument("style-layer-2", _("Second st_yle layer (optional)"),
                            _("A second style blended with the first; none = one style"),
                            True, READWRITE)
    add_number_argument(proc, "style-mix", _("Second style _mix"),
                        _("Share of the second style: 0 = first only, 1 = second only"))


def _device_choice():
    choice = Gimp.Choice.new()
    for i, (name, label) in enumerate(nst_core.device_choices()):
        choice.add(name, i, label, "")
    return choice


# ---------------------------------------------------------------------------- presets

def _default_preset():
    try:
        return bridge()[1].DEFAULT_PRESET
    except Exception:
        return FALLBACK_PRESET


def _preset_listing():
    """The engine's ``presets --json`` answer, or None; never raises.

    At registration the engine is asked and the answer remembered. A run reuses the remembered
    list, so the choice a call is checked against at run time is the one GIMP registered, even
    when the engine cannot be asked (then the run reports why), and no run pays for the
    listing."""
    cache = os.path.join(GLib.get_user_cache_dir(), "nst-style-transfer", "plugin-presets.json")
    if "-run" in sys.argv:  # GIMP starts plug-ins with -query, -init or -run
        try:
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    try:
        client_mod, config_mod = bridge()
        listing = client_mod.list_presets(config_mod.load_config(),
                                          timeout=PRESET_LIST_TIMEOUT)
    except Exception:
        return None
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            json.dump(listing, f)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass
    return listing


_LISTING = []  # the listing, asked once per process (both procedures register from it)


def _preset_choice():
    """A Gimp.Choice of the presets the engine knows, and the default; never raises.

    GIMP caches the registration in pluginrc until the plug-in file's mtime changes, so a new
    user preset shows up after the plug-in is registered again (see docs/PLUGIN.md)."""
    default = _default_preset()
    entries = []
    if not _LISTING:
        _LISTING.append(_preset_listing())
    listing = _LISTING[0]
    try:
        default = listing.get("default") or default
        for p in listing["presets"]:
            name = p.get("name")
            if isinstance(name, str) and name and name not in (e[0] for e in entries):
                entries.append((name, p.get("label") or name, p.get("description") or ""))
    except Exception:
        entries = []
    if default not in (e[0] for e in entries):
        entries.insert(0, (default, default, _("the default preset")))
    choice = Gimp.Choice.new()
    for i, (name, label, desc) in enumerate(entries):
        choice.add(name, i, str(label), str(desc))
    return choice, default
