"""The documents a contributor reads stay true to the tree: every module, file and folder that
docs/ARCHITECTURE.md names exists, and no link or path in the repository's documents leads out
of the repository (a clone has nothing beside it to read)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                    *(ROOT / "benchmarks").glob("*.md")])
#: Where a name in the map is looked for: the repository, the engine package, the plug-in
#: folder, the tests.
BASES = (ROOT, ROOT / "nst_engine", ROOT / "gimp_plugin" / "nst-style-transfer", ROOT / "tests")
#: The engine's subpackages: a dotted name starting with one of them is a module path.
PACKAGES = ("nst_engine", "transfer", "server", "bridge", "model", "device", "installer")

CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: A table row of the map: the first cell names a folder or module, the second what it owns.
ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*(.+?)\s*\|\s*$")


def _exists(path: str) -> bool:
    path = path.rstrip("/")
    return any((base / path).exists() or (base / (path + ".py")).exists() for base in BASES)


def _module_exists(dotted: str) -> bool:
    """``server.session`` or ``transfer.pipeline.stylize``: a module, maybe with an attribute."""
    parts = dotted.split(".")
    if _exists("/".join(parts)):
        return True
    # The last part an attribute: what comes before must be a module file, not a package.
    return len(parts) > 1 and any((base / ("/".join(parts[:-1]) + ".py")).exists()
                                  for base in BASES)


def named_paths(text: str) -> list[str]:
    """The backticked names in ``text`` that are paths or dotted module names."""
    found = []
    for token in CODE.findall(text):
        token = token.strip()
        if " " in token or token.startswith(("-", "$", "~")) or "*" in token:
            continue
        if token.endswith(".py") or ("/" in token and not token.startswith("<")):
            found.append(token)
        elif re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", token) and token.split(".")[0] in PACKAGES:
            found.append(token)
    return found


def test_every_path_the_map_names_exists():
    missing = []
    for token in named_paths(ARCHITECTURE.read_text(encoding="utf-8")):
        if token.startswith(("http", "../")) or "{" in token:
            continue  # links are the next test's; {a,b} patterns name cache folders
        ok = _module_exists(token) if "/" not in token and not token.endswith(".py") \
            else _exists(token)
        if not ok:
            missing.append(token)
    assert not missing, f"docs/ARCHITECTURE.md names what the tree lacks: {missing}"


def test_every_module_a_folder_row_lists_exists():
    """In a row for a folder (``model/``), each backticked name followed by its job in
    parentheses is a module of that folder."""
    missing = []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        row = ROW.match(line)
        if not row or not row.group(1).startswith("`") or not row.group(1).endswith("/`"):
            continue
        folder = row.group(1).strip("`").rstrip("/")
        if "(" in folder:
            continue
        for name in re.findall(r"`([a-z_]+)` \(", row.group(2)):
            if not _exists(f"{folder}/{name}"):
                missing.append(f"{folder}/{name}")
    assert not missing, f"docs/ARCHITECTURE.md's folder rows name missing modules: {missing}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    outside = []
    links = [t.split("#")[0] for t in LINK.findall(text)]
    for target in links + named_paths(text):
        if not target or re.match(r"[a-z]+://", target) or \
                (target.startswith("/") and target not in links):
            continue  # a URL, or a system path in backticks (/proc/locks), not a link
        # A path in backticks may be meant from the repository's root or from the document.
        places = [(doc.parent / target).resolve(), (ROOT / target).resolve()]
        if any(ROOT not in p.parents and p != ROOT for p in places):
            outside.append(target)
        elif target in links and not places[0].exists():
            outside.append(f"{target} (no such file)")
    assert not outside, f"{doc.name} points outside the repository: {outside}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    assert named_paths("`transfer/pipeline.py`, `server.session`, `--tile N`, `x y`") == \
        ["transfer/pipeline.py", "server.session"]
    assert _module_exists("server.session") and _module_exists("transfer.pipeline.stylize")
    assert not _module_exists("server.no_such_module")
    assert not _exists("nst_engine/no_such_folder/")
