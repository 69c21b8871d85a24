#!/usr/bin/env python3
"""Install Style Transfer for GIMP: the engine, the VGG19 weights, the plug-in, its configuration.

    python install.py                       # venv + PyTorch from PyPI, download weights, plug-in
    python install.py --python /usr/bin/python3 --weights vgg19.pth   # an existing PyTorch, offline
    python install.py --check               # each part: OK, or what is wrong and how to fix it
    python install.py --uninstall           # remove what the installer put there, nothing else

Five steps, each printed as ``[n/5]``: (1) the engine's Python environment, (2) the weights,
(3) the plug-in in every GIMP 3.x profile, (4) the configuration the plug-in reads, (5) a
self-check that stylizes a tiny image through the same bridge the plug-in uses. Running it
again changes nothing that is already right. Everything it creates is listed in
``install-manifest.json`` in the data folder, which is what ``--uninstall`` removes.

Standard library only; Python 3.10+ on Linux, Windows and macOS. Subprocesses get argv lists,
never a shell.
"""
# This first block must run on any Python 3 so an old one gets a sentence, not a SyntaxError:
# the whole file is parsed before it runs, so nothing below may use syntax newer than 3.6
# (no walrus, no match, no positional-only parameters, no `from __future__ import annotations`).
import sys

MIN_PYTHON = (3, 10)
if sys.version_info[:2] < MIN_PYTHON:
    sys.stderr.write(
        "Style Transfer needs Python %d.%d or newer to install; this is Python %d.%d (%s).\n"
        "Run the installer with a newer Python, e.g. `python3.12 install.py` "
        "(https://www.python.org/downloads/ or your system's python3.12 package).\n"
        % (MIN_PYTHON + tuple(sys.version_info[:2]) + (sys.executable,)))
    sys.exit(1)

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent
sys.path.insert(0, str(CHECKOUT))

from nst_engine.bridge import config as nst_config  # noqa: E402  (needs the path above)

PLUGIN_NAME = "nst-style-transfer"
PLUGIN_SRC = CHECKOUT / "gimp_plugin" / PLUGIN_NAME / (PLUGIN_NAME + ".py")
BRIDGE_SRC = CHECKOUT / "nst_engine" / "bridge"
#: Modules the plug-in imports from its own folder (installed beside it).
PLUGIN_MODULES = (PLUGIN_SRC.parent / "nst_preview.py",)
ENGINE_SRC = CHECKOUT / "nst_engine"
#: The name the plug-in imports the bridge under (a copy of nst_engine/bridge beside it).
BRIDGE_PKG = "nst_bridge"
MANIFEST_NAME = "install-manifest.json"
MANIFEST_VERSION = 1
STEPS = 5
FLATPAK_APP = "org.gimp.GIMP"
#: What the engine imports, with the Debian package and the pip name that provide it.
ENGINE_MODULES = (("torch", "python3-torch", "torch"),
                  ("torchvision", "python3-torchvision", "torchvision"),
                  ("PIL", "python3-pil", "pillow"),
                  ("numpy", "python3-numpy", "numpy"),
                  ("yaml", "python3-yaml", "pyyaml"))
_PROFILE_RE = re.compile(r"^3\.(\d+)$")
_SKIP_NAMES = ("__pycache__",)


class InstallError(Exception):
    """A failure the user can act on: ``message`` says what happened, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _write_error(e: OSError, what: str = "") -> InstallError:
    """A PermissionError / read-only file system in the user's words: which folder, what to do."""
    target = Path(e.filename) if e.filename else None
    folder = target.parent if target is not None else None
    if e.errno == errno.EROFS:
        why = "it is on a read-only file system"
    elif isinstance(e, PermissionError):
        why = "permission denied"
    else:
        why = e.strerror or str(e)
    where = f" in {folder}" if folder else ""
    return InstallError(
        f"Cannot write {what or (target.name if target else 'a file')}{where}: {why}.",
        f"Make {folder or 'that folder'} writable for your user (e.g. `chmod u+w \"{folder}\"`, "
        "or fix its owner), or point the installer elsewhere (--gimp-dir DIR for GIMP's "
        "profile, NST_DATA_DIR / NST_CONFIG_DIR for Style Transfer's own folders). "
        "Do not run the installer as another user (root) than the one who runs GIMP.")


# ------------------------------------------------------------------------------------------
# The log and subprocesses

class Log:
    """``data_dir()/logs/install.log``: every command and its whole output, for the hint."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path else None

    def write(self, text: str) -> None:
        if self._f:
            self._f.write(text if text.endswith("\n") else text + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None

    def run(self, argv: list[str], env: dict[str, str] | None = None, echo: bool = False,
            cwd: Path | None = None) -> "Ran":
        """Run ``argv`` (no shell) with its output going to the log (and the terminal if
        ``echo``: the weights download shows its progress bar). Returns exit code and tail."""
        self.write(f"$ {' '.join(argv)}")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd)
        except OSError as e:
            self.write(f"cannot start: {e}")
            return Ran(127, f"cannot start {argv[0]}: {e.strerror or e}")
        chunks: list[bytes] = []
        size = 0
        assert proc.stdout is not None
        while True:
            block = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
            if not block:
                break
            if echo:
                sys.stdout.buffer.write(block)
                sys.stdout.flush()
            if self._f:
                self._f.write(block.decode("utf-8", "replace"))
            chunks.append(block)
            size += len(block)
            while size > 64 * 1024 and len(chunks) > 1:
                size -= len(chunks.pop(0))
        rc = proc.wait()
        self.write(f"(exit status {rc})")
        return Ran(rc, b"".join(chunks).decode("utf-8", "replace"))


@dataclass
class Ran:
    rc: int
    output: str

    def tail(self, lines: int = 12) -> str:
        # A progress bar redraws with \r: keep only what the last redraw showed.
        kept = [ln.rsplit("\r", 1)[-1].rstrip() for ln in self.output.splitlines()]
        kept = [ln for ln in kept if ln.strip()]
        return "\n".join("    " + ln for ln in kept[-lines:])

    def engine_error(self) -> str:
        """The engine CLI's ``error: …`` text (message and hint), else the tail."""
        text = self.output.replace("\r", "\n")
        i = text.rfind("error: ")
        return text[i + len("error: "):].strip() if i >= 0 else self.tail()


def _probe(python: str, code: str, env: dict[str, str] | None = None,
           args: tuple[str, ...] = (), timeout: float = 300) -> Any:
    """Run a few lines in ``python`` that print one JSON value; None when it did not run."""
    try:
        done = subprocess.run([python, "-c", code, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------
# The manifest: everything the installer created, so --uninstall removes exactly that

class Manifest:
    """``data_dir()/install-manifest.json``. ``created`` lists paths that did not exist before
    the installer made them: ``file``, ``dir`` (removed only when empty: a user's presets keep
    their folder) or ``tree`` (ours whole: venv, engine copy, plug-in folder, logs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"manifest_version": MANIFEST_VERSION, "created": []}
        self._saved = ""
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and isinstance(loaded.get("created"), list):
                    self.data = loaded
                    self._saved = self._text()
            except (OSError, ValueError):
                pass  # unreadable: start a new one; the old entries are lost, not misread

    def _text(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def created(self) -> list[dict[str, str]]:
        return self.data["created"]

    def owns(self, path: Path) -> bool:
        return any(e["path"] == str(path) for e in self.created())

    def record(self, path: Path, kind: str) -> None:
        """Note a path the installer created; anything inside a recorded tree is already
        covered, and a folder first made on the way to a tree becomes that tree."""
        trees = {Path(e["path"]) for e in self.created() if e["kind"] == "tree"}
        if any(t in path.parents for t in trees):
            return
        for e in self.created():
            if e["path"] == str(path):
                if kind == "tree":
                    e["kind"] = "tree"
                return
        self.created().append({"path": str(path), "kind": kind})

    def make_tree(self, path: Path) -> None:
        """A folder that is the installer's whole (venv, engine copy, plug-in folder, logs)."""
        if not path.exists():
            self.make_dirs(path.parent)
            path.mkdir()
            self.record(path, "tree")

    def make_dirs(self, path: Path) -> None:
        """``mkdir -p`` that records each folder it had to create."""
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self.record(d, "dir")

    def save(self) -> None:
        """Write only on change, so a second run leaves the file untouched."""
        text = self._text()
        if text == self._saved and self.path.is_file():
            return
        self.make_dirs(self.path.parent)
        text = self._text()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        self._saved = text


# ------------------------------------------------------------------------------------------
# Files: copy only what differs, link for developers

def _same_file(src: Path, dst: Path) -> bool:
    if dst.is_symlink() or not dst.is_file():
        return False
    try:
        return src.stat().st_size == dst.stat().st_size and src.read_bytes() == dst.read_bytes()
    except OSError:
        return False


def copy_file(src: Path, dst: Path, manifest: Manifest, mode: int | None = None) -> bool:
    """Copy when the contents differ; fix the mode. Returns whether anything changed."""
    changed = False
    if not _same_file(src, dst):
        if dst.is_symlink() or dst.is_dir():
            # Never write *through* a --link symlink into the checkout.
            _remove(dst)
        existed = dst.exists()
        tmp = dst.with_name(dst.name + ".nst-tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        if not existed:
            manifest.record(dst, "file")
        changed = True
    if mode is not None and stat.S_IMODE(dst.stat().st_mode) != mode:
        os.chmod(dst, mode)
        changed = True
    return changed


def link_path(src: Path, dst: Path, manifest: Manifest) -> bool:
    """Make ``dst`` a symlink to ``src`` (``--link``). Returns whether anything changed."""
    if dst.is_symlink() and Path(os.readlink(dst)) == src:
        return False
    existed = dst.exists() or dst.is_symlink()
    if existed:
        _remove(dst)
    os.symlink(src, dst, target_is_directory=src.is_dir())
    if not existed:
        manifest.record(dst, "file")
    return True


def sync_tree(src: Path, dst: Path, manifest: Manifest) -> int:
    """Make ``dst`` hold the same files as ``src`` (no __pycache__): copy the ones that differ,
    remove the ones ``src`` no longer has. Returns the number of changes."""
    changes = 0
    if dst.is_symlink():
        _remove(dst)
        changes += 1
    manifest.make_dirs(dst)
    wanted = set()
    for s in sorted(src.iterdir()):
        if s.name in _SKIP_NAMES or s.suffix == ".pyc":
            continue
        wanted.add(s.name)
        if s.is_dir():
            changes += sync_tree(s, dst / s.name, manifest)
        else:
            changes += copy_file(s, dst / s.name, manifest)
    for d in sorted(dst.iterdir()):
        if d.name not in wanted and d.name not in _SKIP_NAMES:
            _remove(d)
            changes += 1
    return changes


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def tree_hash(root: Path, extra: tuple[Path, ...] = ()) -> str:
    """SHA-256 of a source tree's names and contents (no caches): tells whether the engine
    installed from this checkout is still current."""
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"
                   and "__pycache__" not in p.parts)
    for p in list(files) + [e for e in extra if e.is_file()]:
        h.update(str(p.relative_to(CHECKOUT).as_posix()).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def engine_hash() -> str:
    return tree_hash(ENGINE_SRC, (CHECKOUT / "pyproject.toml",))


# ------------------------------------------------------------------------------------------
# GIMP profiles

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


# ------------------------------------------------------------------------------------------
# The engine environment

@dataclass
class Engine:
    python: str
    pythonpath: list[str] | None = None

    def env(self) -> dict[str, str]:
        from nst_engine.bridge.client import child_env
        return child_env(self.pythonpath)

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "nst_engine", *args]


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def pip_commands(python: str, checkout: Path, torch_index_url: str | None = None,
                 editable: bool = False) -> list[list[str]]:
    """The pip runs that put the engine into a venv.

    With ``--torch-index-url``, torch and torchvision come first from that index alone
    (``--index-url``, exactly as pytorch.org's own instructions do: the CPU-only or a given
    CUDA build), and then the engine from PyPI, where the torch already there satisfies its
    requirement. ``--extra-index-url`` would let pip pick torch from either index by version
    number, which is not what a user naming an index wants.
    """
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    cmds = []
    if torch_index_url:
        cmds.append(pip + ["--index-url", torch_index_url, "torch", "torchvision"])
    if editable:
        cmds.append(pip + ["--editable", str(checkout)])
    else:
        cmds.append(pip + [str(checkout)])
        # The version number does not change with every edit: reinstall our own sources.
        cmds.append(pip + ["--no-deps", "--force-reinstall", str(checkout)])
    return cmds


_PACKAGES_PROBE = """
import importlib.util, json, sys
mods = %r
missing = [m for m in mods if importlib.util.find_spec(m) is None]
versions = {}
try:
    from importlib.metadata import version
    for m, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("PIL", "pillow"),
                    ("numpy", "numpy"), ("yaml", "PyYAML")):
        if m not in missing:
            try:
                versions[m] = version(dist)
            except Exception:
                pass
except ImportError:
    pass
spec = importlib.util.find_spec("nst_engine")
print(json.dumps({"python": list(sys.version_info[:3]), "executable": sys.executable,
                  "missing": missing, "versions": versions,
                  "nst_engine": spec.origin if spec else None}))
"""


def probe_packages(engine: Engine) -> dict[str, Any] | None:
    """Which of the engine's modules the interpreter lacks, found without importing them (fast:
    no torch import); the self-check then imports them for real."""
    mods = [m for m, _, _ in ENGINE_MODULES]
    return _probe(engine.python, _PACKAGES_PROBE % (mods,), env=engine.env())


def missing_packages_error(python: str, missing: list[str]) -> InstallError:
    rows = [(m, deb, pipname) for m, deb, pipname in ENGINE_MODULES if m in missing]
    return InstallError(
        f"{python} lacks what the engine needs: {', '.join(m for m, _, _ in rows)}.",
        "Install them for that Python: on Debian/Ubuntu `sudo apt install "
        + " ".join(deb for _, deb, _ in rows) + "`, or `" + python + " -m pip install "
        + " ".join(p for _, _, p in rows) + "`. Or leave out --python: the installer then "
        "makes its own venv with PyTorch from PyPI.")


# ------------------------------------------------------------------------------------------
# The installer's state through one run

@dataclass
class Ctx:
    args: argparse.Namespace
    log: Log
    manifest: Manifest
    profiles: list[Profile] = field(default_factory=list)
    engine: Engine | None = None
    weights: Path | None = None


def _say(text: str) -> None:
    print(text, flush=True)


def step_engine(ctx: Ctx) -> None:
    """[1/5] A venv in data_dir()/venv with the engine installed, or --python as it is."""
    args, m = ctx.args, ctx.manifest
    want_hash = engine_hash()
    if args.python:
        python = shutil.which(args.python) or args.python
        python = str(Path(python).absolute())
        info = probe_packages(Engine(python))
        if info is None:
            raise InstallError(f"--python {args.python}: it does not run as a Python interpreter.",
                               "Give the path of a python3 executable, e.g. /usr/bin/python3.")
        if tuple(info["python"][:2]) < MIN_PYTHON:
            raise InstallError(
                f"--python {python} is Python {'.'.join(map(str, info['python']))}; the engine "
                f"needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer.",
                "Give a newer interpreter, or leave out --python to get a venv.")
        if info["missing"]:
            raise missing_packages_error(python, info["missing"])
        if args.link:
            pythonpath = [str(CHECKOUT)]
            how = f"using {python} with the engine from this checkout ({CHECKOUT})"
        else:
            engine_root = nst_config.data_dir() / "engine"
            m.make_tree(engine_root)
            changes = sync_tree(ENGINE_SRC, engine_root / "nst_engine", m)
            pythonpath = [str(engine_root)]
            how = (f"using {python}; engine copied to {engine_root}" if changes else
                   f"using {python}; engine in {engine_root} is up to date")
        ctx.engine = Engine(python, pythonpath)
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        m.data["engine"] = {"mode": "python", "python": python, "pythonpath": pythonpath,
                            "engine_hash": want_hash, "link": bool(args.link)}
        m.save()
        _say(f"      {how}" + (f" ({versions})" if versions else ""))
        return

    venv = nst_config.data_dir() / "venv"
    python = str(venv_python(venv))
    ctx.engine = Engine(python)
    record = m.data.get("engine") or {}
    current = (record.get("mode") == "venv" and record.get("engine_hash") == want_hash
               and record.get("torch_index_url") == args.torch_index_url
               and record.get("link") == bool(args.link) and Path(python).is_file())
    if current:
        info = probe_packages(ctx.engine)
        if info is not None and not info["missing"] and info["nst_engine"]:
            _say(f"      venv {venv} is up to date")
            return
    if not Path(python).is_file():
        _say(f"      creating a venv in {venv}")
        existed = venv.exists()
        m.make_dirs(venv.parent)
        if not existed:
            m.record(venv, "tree")
            m.save()
        ran = ctx.log.run([sys.executable, "-m", "venv", str(venv)])
        if ran.rc != 0:
            hint = "See the log for the whole output."
            if "ensurepip" in ran.output:
                hint = ("This Python has no venv/ensurepip module: on Debian/Ubuntu `sudo apt "
                        "install python3-venv`; or use an interpreter that already has PyTorch "
                        "with `--python /usr/bin/python3`.")
            raise InstallError(f"Could not create the venv {venv}:\n{ran.tail()}", hint)
    m.data["engine"] = {"mode": "venv", "python": python, "pythonpath": None,
                        "engine_hash": None, "torch_index_url": args.torch_index_url,
                        "link": bool(args.link)}
    m.save()
    _say("      installing the engine and PyTorch with pip (a download of 1-3 GB the first "
         f"time; pip's output goes to {ctx.log.path})")
    for argv in pip_commands(python, CHECKOUT, args.torch_index_url, editable=args.link):
        ran = ctx.log.run(argv, env=ctx.engine.env())
        if ran.rc != 0:
            raise InstallError(
                f"pip could not install the engine's packages (exit status {ran.rc}). "
                f"Its last lines:\n{ran.tail()}",
                "Check the internet connection and the disk space, then run the installer "
                "again. If you already have a Python with PyTorch (e.g. Debian's "
                "python3-torch), skip the venv: `python install.py --python /usr/bin/python3`."
                + (" Check that --torch-index-url names a PyTorch wheel index, e.g. "
                   "https://download.pytorch.org/whl/cpu." if args.torch_index_url else ""))
    m.data["engine"]["engine_hash"] = want_hash
    m.save()
    _say(f"      installed into {venv}")


def step_weights(ctx: Ctx) -> None:
    """[2/5] The compact VGG19 cache, from --weights FILE or torch.hub's checked download."""
    args, m, engine = ctx.args, ctx.manifest, ctx.engine
    assert engine is not None
    env = engine.env()
    target = _probe(engine.python, "import json; from nst_engine.model.weights import "
                    "default_weights_path as p; print(json.dumps(str(p())))", env=env)
    if not target:
        raise InstallError("The engine does not run: it could not even say where its weights go.",
                           "Run `python install.py --check` for details.")
    cache = Path(target)
    source = str(Path(args.weights).expanduser().resolve()) if args.weights else "download"
    if args.weights and not Path(source).is_file():
        what = ("is a folder" if Path(source).is_dir() else
                "is not a regular file (a pipe, a device or a socket)" if Path(source).exists()
                else "no such file")
        raise InstallError(f"--weights {args.weights}: {what}.",
                           "Give the path of a VGG19 .pth file (torchvision's "
                           "vgg19-dcbb9e9d.pth or the Caffe conversion vgg19-d01eb7cb.pth).")
    record = m.data.get("weights") or {}
    same_source = record.get("source") == source and (
        source == "download" or record.get("source_stamp") == _stamp(Path(source)))
    # Without --weights, weights installed earlier (from a file or a download) are kept.
    if cache.is_file() and record.get("path") == str(cache) and (same_source or not args.weights):
        if record.get("sha256") == _sha256(cache):
            _say(f"      {cache} is in place ({'from ' + record['source'] if record['source'] != 'download' else 'downloaded'})")
            ctx.weights = cache
            return
    before = _listing(cache.parent)
    m.make_dirs(cache.parent)
    if args.weights:
        ran = ctx.log.run(engine.argv("fetch-weights", "--from-file", source), env=env, echo=True)
    else:
        ran = ctx.log.run(engine.argv("fetch-weights"), env=env, echo=True)
    for p in sorted(_listing(cache.parent) - before):
        m.record(cache.parent / p, "file")
    m.save()
    if ran.rc != 0:
        msg = ran.engine_error()
        if args.weights:
            raise InstallError(f"The weights file {source} could not be installed:\n    {msg}",
                               "Use a VGG19 weights file (see the message above).")
        raise InstallError(
            f"The VGG19 weights could not be downloaded:\n    {msg}",
            "If this machine is offline: download the file named above on another machine, "
            "copy it here and run `python install.py --weights FILE` (add the --python or "
            "--torch-index-url options you used).")
    if not cache.is_file():
        raise InstallError(f"fetch-weights ended without writing {cache}.",
                           "See the log, and run `python install.py --check`.")
    m.data["weights"] = {"path": str(cache), "source": source, "sha256": _sha256(cache),
                         "source_stamp": _stamp(Path(source)) if args.weights else None}
    m.save()
    ctx.weights = cache


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listing(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


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
            _say(f"      cannot make symlinks here ({e.strerror or e}); copying instead")
            link = False
    if not link:
        changes = copy_file(PLUGIN_SRC, script, manifest, mode=0o755)
        changes += sync_tree(BRIDGE_SRC, bridge, manifest)
        for module in PLUGIN_MODULES:
            changes += copy_file(module, dst / module.name, manifest)
    if not existed:
        return "installed" + (" (linked)" if link else "")
    return ("updated" if changes else "up to date") + (" (linked)" if link else "")


def step_plugin(ctx: Ctx) -> None:
    """[3/5] The plug-in into every profile found (or given)."""
    m = ctx.manifest
    for profile in ctx.profiles:
        what = install_plugin(profile, m, ctx.args.link)
        entry = {"path": str(profile.path), "version": profile.version,
                 "flatpak": profile.flatpak}
        if entry not in m.data.setdefault("profiles", []):
            m.data["profiles"].append(entry)
        m.save()
        _say(f"      {profile.label()}: {what}")


def build_config(engine: Engine, weights: Path, device: str, flatpak: bool = False,
                 keep_warm: float = nst_config.DEFAULT_KEEP_WARM) -> dict[str, Any]:
    """What the plug-in reads (see bridge/config.py). A Flatpak GIMP gets the same engine
    started on the host through ``flatpak-spawn --host`` (which passes no environment, so
    PYTHONPATH goes on its command line; --watch-bus ends the engine with the plug-in)."""
    from nst_engine.bridge.client import DEFAULT_HELLO_TIMEOUT  # slow first torch import

    serve = engine.argv("serve", "--weights", str(weights))
    presets = engine.argv("presets", "--json")
    cfg: dict[str, Any] = {"engine_command": serve, "presets_command": presets,
                           "weights": str(weights), "device": device,
                           "log_dir": str(nst_config.default_log_dir()),
                           "hello_timeout": int(DEFAULT_HELLO_TIMEOUT),
                           "keep_warm": keep_warm}
    if flatpak:
        prefix = ["flatpak-spawn", "--host", "--watch-bus"]
        if engine.pythonpath:
            prefix.append("--env=PYTHONPATH=" + os.pathsep.join(engine.pythonpath))
        cfg["engine_command"] = prefix + serve
        cfg["presets_command"] = prefix + presets
    elif engine.pythonpath:
        cfg["engine_pythonpath"] = list(engine.pythonpath)
    return cfg


def write_config(cfg: dict[str, Any], path: Path, manifest: Manifest) -> bool:
    """save_config only when the contents differ. Returns whether it wrote."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current == {"version": nst_config.CONFIG_VERSION, **cfg}:
        return False
    existed = path.exists()
    manifest.make_dirs(path.parent)
    nst_config.save_config(cfg, path)
    if not existed:
        manifest.record(path, "file")
    return True


def earlier_keep_warm() -> float:
    """A keep_warm the user set in config.json survives a re-install; else the default."""
    try:
        earlier = nst_config.load_config()
    except nst_config.ConfigError:
        return nst_config.DEFAULT_KEEP_WARM
    if "keep_warm" not in earlier:
        return nst_config.DEFAULT_KEEP_WARM
    value = nst_config.keep_warm(earlier)
    return int(value) if value == int(value) else value


def stop_warm_engine(remove_folder: bool = False) -> None:
    """A warm engine still runs the code and settings of before: stop it (the next plug-in run
    starts the new one). ``remove_folder``: also its socket folder (--uninstall)."""
    from nst_engine.bridge import warm

    pid = warm.stop_engine()
    if pid:
        _say(f"Stopped the running Style Transfer engine (pid {pid}); the next run starts "
             "the new one.")
    if remove_folder and warm.supported():
        try:
            folder = warm.private_dir(create=False)
        except warm.WarmUnavailable:
            return
        for name in (warm.SOCKET_NAME, warm.LOCK_NAME):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass


def step_config(ctx: Ctx) -> None:
    """[4/5] config.json for the plug-in; one more inside each Flatpak GIMP's sandbox."""
    m = ctx.manifest
    assert ctx.engine is not None and ctx.weights is not None
    device = ctx.args.device
    if device is None:  # keep a device chosen earlier, unless one is given now
        try:
            device = nst_config.load_config().get("device") or "auto"
        except nst_config.ConfigError:
            device = "auto"
    path = nst_config.config_path()
    keep_warm = earlier_keep_warm()
    wrote = write_config(build_config(ctx.engine, ctx.weights, device, keep_warm=keep_warm),
                         path, m)
    configs = [str(path)]
    _say(f"      {path}: {'written' if wrote else 'up to date'} (device {device})")
    for profile in ctx.profiles:
        if not profile.flatpak:
            continue
        fpath, flog = flatpak_paths(profile)
        cfg = build_config(ctx.engine, ctx.weights, device, flatpak=True, keep_warm=keep_warm)
        cfg["log_dir"] = str(flog)
        wrote = write_config(cfg, fpath, m)
        configs.append(str(fpath))
        _say(f"      {fpath}: {'written' if wrote else 'up to date'} (Flatpak)")
        _say("      " + FLATPAK_WARNING.replace("\n", "\n      "))
    m.data["configs"] = sorted(set(m.data.get("configs", [])) | set(configs))
    m.save()


def self_check(cfg: dict[str, Any]) -> str:
    """Start the engine from ``cfg`` exactly as the plug-in does and stylize a 16x16 image.
    Returns a line for the user; raises InstallError."""
    from nst_engine.bridge.client import EngineClient, EngineFailed, list_presets
    from nst_engine.bridge.wire import RGBAImage

    preset = nst_config.DEFAULT_PRESET
    try:
        names = {p.get("name") for p in list_presets(cfg).get("presets", [])}
        if "quick" in names:
            preset = "quick"
    except EngineFailed as e:
        raise InstallError(f"The engine cannot list its presets: {e.message}", e.hint) from None
    size = 16
    content = RGBAImage(size, size, bytes(
        v for y in range(size) for x in range(size) for v in (x * 16, y * 16, 128, 255)))
    style = RGBAImage(size, size, bytes(
        v for y in range(size) for x in range(size)
        for v in ((255, 40, 40, 255) if (x // 4 + y // 4) % 2 else (30, 30, 200, 255))))
    started = time.monotonic()
    try:
        # keep_warm 0: a per-run engine, so the installer leaves no engine running behind it.
        with EngineClient.from_config(cfg, keep_warm=0) as client:
            hello = client.start()
            out = client.stylize(content, [(style, 1.0)], preset=preset,
                                 overrides={"max_size": 64, "levels": 1, "iterations": 2},
                                 device=cfg.get("device") or "auto")
    except EngineFailed as e:
        raise InstallError(f"The engine failed the self-check: {e.message}",
                           (e.hint + " " if e.hint else "") + f"Engine log: {e.log_path}") \
            from None
    if (out.width, out.height) != (size, size):
        raise InstallError(f"The engine returned a {out.width}x{out.height} image for a "
                           f"{size}x{size} one.", "Report this as a bug, with the engine log.")
    notices = [str(n) for n in hello.get("notices") or []]
    w = hello.get("weights") or {}
    if w.get("notice"):
        notices.append(str(w["notice"]))
    text = (f"stylized a {size}x{size} test image with preset {preset!r} on "
            f"{hello.get('device') or 'the default device'} (torch {hello.get('torch')}) "
            f"in {time.monotonic() - started:.1f} s")
    for n in dict.fromkeys(notices):
        text += f"\n      notice: {n}"
    return text


def step_self_check(ctx: Ctx) -> None:
    """[5/5] The engine through the bridge, then what to click in GIMP."""
    cfg = nst_config.load_config()
    _say(f"      {self_check(cfg)}")


WHAT_TO_CLICK = """
Style Transfer is installed. In GIMP:
  1. Restart GIMP (it reads new plug-ins at start).
  2. Open an image with a photo layer and a layer holding a painting.
  3. Select the photo layer (and a region, or nothing for the whole layer).
  4. Filters > Style Transfer…: pick the painting as the style layer, a preset, OK.
The result arrives as a new layer above the photo.
Check the installation at any time with `python install.py --check`; logs are in {logs}."""


def reuse_earlier_choices(args: argparse.Namespace, manifest: Manifest) -> None:
    """A plain re-run (after a `git pull`, say) keeps the engine route chosen before, so it
    does not swap a working system PyTorch for a 2 GB download."""
    earlier = manifest.data.get("engine") or {}
    if args.python is None and args.torch_index_url is None:
        if earlier.get("mode") == "python" and Path(earlier.get("python", "")).is_file():
            args.python = earlier["python"]
            _say(f"Using {args.python} as at the last install (--uninstall first to switch "
                 "to a venv).")
        elif earlier.get("mode") == "venv" and earlier.get("torch_index_url"):
            args.torch_index_url = earlier["torch_index_url"]


def install(args: argparse.Namespace) -> int:
    if args.gimp_dir:
        profiles = profiles_from_args(args.gimp_dir)
    else:
        profiles, looked = find_profiles()
        if not profiles:
            raise no_profile_error(looked)
    _say("Found " + ", ".join(p.label() for p in profiles))
    if any(p.flatpak for p in profiles):
        _say("Note: " + FLATPAK_WARNING)
    manifest = Manifest(nst_config.data_dir() / MANIFEST_NAME)
    reuse_earlier_choices(args, manifest)
    stop_warm_engine()
    log_dir = nst_config.default_log_dir()
    try:
        manifest.make_tree(log_dir)
        log = Log(log_dir / "install.log")
    except OSError as e:
        raise _write_error(e, "the installer's log") from None
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} install.py {' '.join(sys.argv[1:])} "
              f"(Python {sys.version.split()[0]}, {sys.platform})")
    ctx = Ctx(args, log, manifest, profiles)
    steps = [("Engine environment", step_engine), ("Weights", step_weights),
             ("Plug-in", step_plugin), ("Configuration", step_config),
             ("Self-check", step_self_check)]
    try:
        for n, (title, run) in enumerate(steps, 1):
            _say(f"[{n}/{STEPS}] {title}")
            log.write(f"--- [{n}/{STEPS}] {title}")
            try:
                try:
                    run(ctx)
                except OSError as e:
                    raise _write_error(e) from None
                finally:
                    try:
                        manifest.save()
                    except OSError:
                        pass
            except InstallError as e:
                log.write(f"FAILED: {e.message}\n{e.hint}")
                print(f"\n[{n}/{STEPS}] {title} FAILED: {e.message}", file=sys.stderr)
                if e.hint:
                    print(f"  What to do: {e.hint}", file=sys.stderr)
                print(f"  Log: {log.path}", file=sys.stderr)
                if n > 1:
                    done = "Step 1 is" if n == 2 else f"Steps 1-{n - 1} are"
                    print(f"  {done} done and kept; run the installer again to continue.",
                          file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"\n[{n}/{STEPS}] {title}: interrupted. Run the installer again to "
                      "continue; finished steps are kept.", file=sys.stderr)
                return 130
    finally:
        log.close()
    _say(WHAT_TO_CLICK.format(logs=log_dir))
    return 0


# ------------------------------------------------------------------------------------------
# --check

class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, part: str, text: str) -> None:
        _say(f"  OK    {part}: {text}")

    def note(self, part: str, text: str) -> None:
        _say(f"  NOTE  {part}: {text}")

    def bad(self, part: str, text: str, fix: str) -> None:
        self.problems += 1
        _say(f"  FAIL  {part}: {text}")
        if fix:
            _say(f"        fix: {fix}")


_WEIGHTS_PROBE = """
import json, sys
from nst_engine.errors import EngineError
from nst_engine.model.weights import load_weights
try:
    w = load_weights(sys.argv[1] if len(sys.argv) > 1 else None)
except EngineError as e:
    print(json.dumps({"ok": False, "message": e.message, "hint": e.hint}))
else:
    print(json.dumps({"ok": True, "kind": w.kind, "verified": w.verified, "notice": w.notice}))
"""


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
    copies = [(src, profile.plugin_dir / src.name) for src in PLUGIN_MODULES]
    copies += [(src, bridge / src.name) for src in sorted(BRIDGE_SRC.glob("*.py"))]
    for src, dst in copies:
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            return r.bad(part, f"{dst} is missing or differs from this checkout's "
                               f"{src.relative_to(CHECKOUT)}", fix)
    r.ok(part, "present, executable, nst_bridge current" + (" (linked)" if linked else ""))


def check(args: argparse.Namespace) -> int:
    r = Report()
    _say("Style Transfer for GIMP: checking the installation")
    manifest = Manifest(nst_config.data_dir() / MANIFEST_NAME)
    # Configuration
    cfg = None
    cpath = nst_config.config_path()
    try:
        cfg = nst_config.load_config(cpath)
        r.ok("configuration", str(cpath))
    except nst_config.ConfigError as e:
        r.bad("configuration", str(e), "run `python install.py` again to rewrite it")
    engine_ok = False
    if cfg is not None:
        python = cfg["engine_command"][0]
        engine = Engine(python, cfg.get("engine_pythonpath"))
        info = probe_packages(engine)
        if info is None:
            r.bad("engine Python", f"{python} does not run",
                  "run `python install.py` again (add --python PATH if you installed with it)")
        else:
            r.ok("engine Python", f"{python} (Python {'.'.join(map(str, info['python']))})")
            if info["missing"]:
                e = missing_packages_error(python, info["missing"])
                r.bad("engine packages", e.message, e.hint)
            elif not info["nst_engine"]:
                r.bad("engine packages", "the nst_engine package is not importable",
                      "run `python install.py` again")
            else:
                stale = (manifest.data.get("engine") or {}).get("engine_hash") != engine_hash()
                r.ok("engine packages", ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
                if stale and manifest.exists:
                    r.note("engine sources", "the installed engine is older than this checkout; "
                           "`python install.py` updates it")
                engine_ok = True
        if engine_ok:
            wpath = cfg.get("weights")
            res = _probe(python, _WEIGHTS_PROBE, env=engine.env(),
                         args=(wpath,) if wpath else ())
            if res is None:
                engine_ok = False
                r.bad("weights", "checking them crashed the engine", "see `python -m nst_engine "
                      "doctor` with the engine's Python")
            elif not res["ok"]:
                engine_ok = False
                r.bad("weights", res["message"],
                      "run `python install.py` again to download them, or `python install.py "
                      "--weights FILE` with a VGG19 file you have (offline)")
            else:
                state = "verified" if res["verified"] else "NOT verified"
                r.ok("weights", f"{wpath or 'default cache'} ({res['kind']}, {state})")
                if res.get("notice"):
                    r.note("weights", res["notice"])
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
        _say(f"{r.problems} problem{'s' if r.problems > 1 else ''} found.")
        return 1
    _say("All parts OK. In GIMP: Filters > Style Transfer…")
    return 0


# ------------------------------------------------------------------------------------------
# --uninstall

def uninstall(args: argparse.Namespace) -> int:
    mpath = nst_config.data_dir() / MANIFEST_NAME
    manifest = Manifest(mpath)
    if not manifest.exists:
        _say(f"Nothing to uninstall: there is no install record ({mpath}).")
        return 0
    stop_warm_engine(remove_folder=True)
    # Written by the engine, not the installer, but ours all the same: without it the data
    # folder could not go.
    cache = nst_config.cpu_precision_cache_path()
    if cache.is_file():
        cache.unlink()
        _say(f"  removed {cache}")
    kept = []
    # Newest first: a file goes before the folder that holds it, and the data folder (which
    # holds this record) comes after everything in it.
    for entry in reversed(manifest.created()):
        p = Path(entry["path"])
        if p == mpath:
            continue
        if p == mpath.parent:
            mpath.unlink(missing_ok=True)
        try:
            if entry["kind"] == "dir":
                if not p.is_dir() or p.is_symlink():
                    continue
                try:
                    p.rmdir()
                except OSError:
                    kept.append(p)
                    continue
            elif p.exists() or p.is_symlink():
                _remove(p)
            else:
                continue
        except OSError as e:
            raise _write_error(e) from None
        _say(f"  removed {p}")
    mpath.unlink(missing_ok=True)
    ours = (nst_config.config_dir(), nst_config.data_dir())
    for p in kept:  # ~/.local and the like are kept silently: other programs use them too
        if any(p == o or o in p.parents for o in ours):
            _say(f"  kept {p}: it now holds files the installer did not put there")
    engine = manifest.data.get("engine") or {}
    if engine.get("mode") == "python":
        _say(f"  left alone: the interpreter you gave ({engine.get('python')})")
    _say("Style Transfer is uninstalled. Restart GIMP to drop it from the Filters menu.")
    return 0


# ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python install.py",
        description="Install Style Transfer for GIMP 3: the engine (PyTorch), the VGG19 "
                    "weights, the plug-in in every GIMP 3.x profile, and its configuration.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="check an existing installation part by part and run a test job")
    mode.add_argument("--uninstall", action="store_true",
                      help="remove what the installer put there (and nothing else)")
    p.add_argument("--python", metavar="PATH",
                   help="use this interpreter as it is (it must have torch, torchvision, "
                        "pillow, numpy, pyyaml; e.g. Debian's /usr/bin/python3 with "
                        "python3-torch) instead of creating a venv")
    p.add_argument("--torch-index-url", metavar="URL",
                   help="install torch and torchvision from this index (e.g. "
                        "https://download.pytorch.org/whl/cpu for the CPU-only build, or "
                        ".../whl/cu126 for a CUDA build); venv only")
    p.add_argument("--weights", metavar="FILE",
                   help="a VGG19 weights file you already have (offline install) instead of "
                        "downloading it")
    p.add_argument("--gimp-dir", metavar="DIR", action="append",
                   help="install into this GIMP profile folder instead of the ones found "
                        "(repeatable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                   help="the plug-in's default device (default: auto, or what was set before)")
    p.add_argument("--link", action="store_true",
                   help="for developers: symlink the plug-in and engine to this checkout "
                        "instead of copying (venv: an editable install)")
    args = p.parse_args(argv)
    if args.python and args.torch_index_url:
        p.error("--torch-index-url installs into the installer's venv; with --python, install "
                "PyTorch into that interpreter yourself")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.check:
            return check(args)
        if args.uninstall:
            return uninstall(args)
        return install(args)
    except InstallError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  What to do: {e.hint}", file=sys.stderr)
        return 1
    except OSError as e:
        err = _write_error(e)
        print(f"error: {err.message}\n  What to do: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
