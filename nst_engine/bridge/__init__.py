"""The standard-library-only half of the engine: wire format, client and configuration.

This package is what the GIMP plug-in imports (GIMP's Python has no torch, numpy or PyYAML).
``install.py`` copies it beside the plug-in as ``nst_bridge``, so it must use relative imports
only and nothing outside the standard library; Python 3.10+ on Linux, Windows and macOS.
"""
