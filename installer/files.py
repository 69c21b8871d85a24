"""The manifest of everything the installer created, so --uninstall removes exactly that; files
copied only when they differ, or linked for developers; the hashes that say what changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from nst_engine.bridge import config as nst_config

from .layout import CHECKOUT, ENGINE_SRC

MANIFEST_NAME = "install-manifest.json"
MANIFEST_VERSION = 1
_SKIP_NAMES = ("__pycache__",)


def manifest_path() -> Path:
    return nst_config.data_dir() / MANIFEST_NAME


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
            remove(dst)
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
        remove(dst)
    os.symlink(src, dst, target_is_directory=src.is_dir())
    if not existed:
        manifest.record(dst, "file")
    return True


def sync_tree(src: Path, dst: Path, manifest: Manifest) -> int:
    """Make ``dst`` hold the same files as ``src`` (no __pycache__): copy the ones that differ,
    remove the ones ``src`` no longer has. Returns the number of changes."""
    changes = 0
    if dst.is_symlink():
        remove(dst)
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
            remove(d)
            changes += 1
    return changes


def remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def listing(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


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


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamp(p: Path) -> list[int]:
    """Size and modification time: whether a --weights file changed since it was installed."""
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]
