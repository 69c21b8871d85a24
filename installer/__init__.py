"""What ``python install.py`` runs, one module per job; install.py parses the arguments.

Standard library only: it runs on whatever Python the user starts it with, before the engine's
packages exist. It imports ``nst_engine.bridge`` (standard library too) from this checkout, and
learns everything else about the engine by asking it (``python -m nst_engine doctor --json``).
Nothing in this folder is installed: it is the installer, not part of what it installs.

    layout         this checkout's sources, and the names they are installed under
    errors         InstallError: what happened and what to do, in the user's words
    log            the terminal, the install log, subprocesses and their output
    files          the manifest of what the installer created; copy, link, sync, hashes
    profiles       GIMP 3 profiles: found on each platform, given, Flatpak
    engine         the engine's Python (venv, pip, --python), what the installer asks it
    plugin         the plug-in and its nst_bridge copy in one profile
    configuration  config.json for the plug-in
    selfcheck      a tiny stylize through the bridge, as the plug-in runs it
    steps          the install: five steps in order, a failure in the user's words
    check          --check: each part OK, or what is wrong and how to fix it
    uninstall      --uninstall: remove what the manifest lists, nothing else
"""
