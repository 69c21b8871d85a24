"""Style presets: YAML files that name values for :class:`~nst_engine.params.StyleParams`.

Torch-free on purpose: the GIMP dialog asks for the preset list and must not wait for PyTorch.

Files
    One preset per ``.yaml`` (or ``.yml``) file. Built-ins live in ``nst_engine/presets/``;
    the user folder (``bridge.config.user_presets_dir()``, ``NST_PRESETS_DIR`` overrides) adds
    presets and overrides built-ins of the same name. Keys:

    - ``name``: the preset's name (default: the file stem)
    - ``label``: what the dialog shows (default: the name); ``description``: one line
    - ``extends``: the preset this one starts from. A preset that extends its own name (a user
      ``balanced.yaml`` with ``extends: balanced``) starts from the built-in it replaces; any
      other name means the preset of that name after user overrides.
    - every other key is a :class:`StyleParams` field; its type and range come from the field's
      metadata in ``params.py`` (the one source of truth for keys, defaults and ranges).

Precedence, lowest to highest::

    StyleParams defaults < the extends chain (base first) < the preset < explicit overrides

Explicit overrides are the CLI flags and plug-in arguments; ``None`` means "not given".

Errors
    A problem in a file is a :class:`PresetError` whose message names the file, the preset and
    the key (and the line, from PyYAML's marks). A bad user file is reported in
    ``PresetSet.problems`` and skipped; the other presets stay usable, and asking for the bad
    one raises its error. A bad built-in file is a bug and raises at load time.
    Each error also carries ``.path``, ``.preset``, ``.key`` and ``.line`` (any may be None).

``python -m nst_engine presets --json`` prints one JSON object (the plug-in reads it)::

    {"default": "balanced",
     "presets": [{"name", "label", "description", "origin": "built-in"|"user",
                  "source": "/path/file.yaml"}, ...],          # sorted by name
     "problems": [{"file", "preset", "key", "line", "message", "hint"}, ...]}

``presets --show NAME --json`` prints one object: the list entry's keys plus
``"extends": [names, base first]`` and ``"values": {field: resolved value}`` (every
StyleParams field; layer maps as objects, ``seed`` may be null).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import yaml

from .bridge import config
from .bridge.wire import EXCERPT, excerpt as _excerpt  # bounded quotes of a user's values
from .errors import InvalidInput, PresetError
from .params import PARAM_FIELDS, SETTINGS_HINT, StyleParams, check_value
from .wording import cut, did_you_mean, did_you_mean_tail, type_name

BUILTIN_DIR = Path(__file__).with_suffix("")  # nst_engine/presets/
SUFFIXES = (".yaml", ".yml")
META_KEYS = ("name", "label", "description", "extends")
BUILT_IN, USER = "built-in", "user"

_HINT_FILE = "Fix or remove the file; the other presets are still available."
#: A preset is a few lines; anything bigger is a mistake (or an attack) and is not parsed, so a
#: stray huge file cannot slow every command that lists presets.
MAX_FILE_BYTES = 64 * 1024
#: Presets nest two levels (a layer map); YAML deeper than this is refused before it is built.
MAX_DEPTH = 8
#: Nodes in a file with every alias expanded: bounds "billion laughs" alias bombs.
MAX_NODES = 5000
#: Longest preset name (the dialog shows it; the layer name repeats it).
MAX_NAME = 100
_HINT_BUILTIN = "This is a bug in a built-in preset; please report it."


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    source: Path
    origin: str  # BUILT_IN or USER
    values: Mapping[str, Any]  # this file's own StyleParams keys, validated
    extends: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict, repr=False)  # key -> line in source


@dataclass
class PresetSet:
    presets: dict[str, Preset]  # name -> preset after user overrides
    problems: list[PresetError]  # skipped user files
    builtins: dict[str, Preset] = field(default_factory=dict)  # before user overrides
    broken: dict[str, PresetError] = field(default_factory=dict)  # name or stem -> why unusable

    def get(self, name: str) -> Preset:
        if name in self.presets:
            return self.presets[name]
        if name in self.broken:
            raise self.broken[name]
        raise PresetError(f"There is no preset named '{cut(str(name))}'.",
                          did_you_mean(name, self.presets) +
                          "Run `python -m nst_engine presets` to list them.")

    def chain(self, name: str) -> list[Preset]:
        """The preset and the ones it extends, base first; loops and dangling names raise."""
        chain: list[Preset] = []
        preset = self.get(name)
        while True:
            chain.append(preset)
            if preset.extends is None:
                return chain[::-1]
            base = self._base_of(preset)
            if base is None:
                what = (f"extends its own name '{preset.name}', but there is no built-in preset "
                        "of that name to start from" if preset.extends == preset.name else
                        f"extends '{preset.extends}', which does not exist"
                        + did_you_mean_tail(preset.extends, self.presets))
                raise _error(preset, "extends", what,
                             "Name an existing preset (see `python -m nst_engine presets`).")
            if any(p is base for p in chain):
                loop = " -> ".join([p.name for p in chain] + [base.name])
                raise _error(chain[0], "extends", f"the extends chain loops: {loop}",
                             "Make one preset in the loop extend nothing, or another preset.")
            preset = base

    def _base_of(self, preset: Preset) -> Preset | None:
        """Built-ins extend built-ins; a user preset extends the merged set, or, when it
        extends its own name, the built-in it replaces."""
        if preset.origin == BUILT_IN or preset.extends == preset.name:
            return self.builtins.get(preset.extends)
        if preset.extends in self.broken:
            raise _error(preset, "extends", f"extends '{preset.extends}', which was skipped: "
                         f"{self.broken[preset.extends].message}", _HINT_FILE)
        return self.presets.get(preset.extends)


def load_presets(user_dir: str | Path | None = None) -> PresetSet:
    """Built-in presets, then the user folder's (``None`` = the platform's), validated."""
    builtin_files, _ = _read_folder(BUILTIN_DIR, BUILT_IN)
    builtins = _by_name(builtin_files, BUILT_IN, broken={}, problems=[])
    _check_chains(PresetSet(presets=dict(builtins), problems=[], builtins=builtins))
    folder = Path(user_dir) if user_dir is not None else config.user_presets_dir()
    user_files, problems = _read_folder(folder, USER)
    broken = {}
    for err in problems:  # findable by the file's stem and by its name, when it got that far
        if err.path.suffix.lower() in SUFFIXES:
            broken[err.path.stem] = err
            broken[err.preset or err.path.stem] = err
    users = _by_name(user_files, USER, broken=broken, problems=problems)
    # A broken user file hides the built-in of its name: using it must fail, not quietly fall
    # back to a preset the user meant to change.
    presets = {n: p for n, p in {**builtins, **users}.items() if n in users or n not in broken}
    pset = PresetSet(presets=presets, problems=problems, builtins=builtins,
                     broken={n: e for n, e in broken.items() if n not in users})
    _check_chains(pset)
    return pset


def resolve(name: str | None = None, overrides: Mapping[str, Any] | None = None, *,
            user_dir: str | Path | None = None) -> StyleParams:
    """The preset ``name`` (``None`` = ``DEFAULT_PRESET``) with ``overrides`` applied."""
    pset = load_presets(user_dir)
    values = _merged(pset, name or config.DEFAULT_PRESET)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        spec = PARAM_FIELDS.get(key)
        if spec is None:
            raise InvalidInput(f"Unknown setting '{cut(str(key))}'."
                               + did_you_mean_tail(key, PARAM_FIELDS), SETTINGS_HINT)
        problem, checked = check_value(spec.metadata, value, plain=False)
        if problem:
            raise InvalidInput(f"The setting '{key}' {problem}.", SETTINGS_HINT)
        values[key] = checked
    if (overrides or {}).get("max_size") is not None:
        values["full_resolution"] = "never"  # a size asked for is the size, on every device
    return StyleParams(**values)


def resolved_values(pset: PresetSet, name: str) -> dict[str, Any]:
    """Every StyleParams field for preset ``name``, without overrides (for ``--show``)."""
    return _merged(pset, name)


def run_command(args) -> int:
    """``python -m nst_engine presets [--show NAME] [--json]``."""
    pset = load_presets()
    out = sys.stdout
    if args.show:
        preset = pset.get(args.show)
        chain = pset.chain(args.show)
        values = _merged(pset, args.show)
        if args.json:
            json.dump({**_entry(preset), "extends": [p.name for p in chain[:-1]],
                       "values": _jsonable(values)}, out, indent=2)
            out.write("\n")
        else:
            _print_show(preset, chain, values, out)
    elif args.json:
        json.dump({"default": config.DEFAULT_PRESET,
                   "presets": [_entry(p) for _, p in sorted(pset.presets.items())],
                   "problems": [_problem_entry(e) for e in pset.problems]}, out, indent=2)
        out.write("\n")
    else:
        _print_list(pset, out)
    if pset.problems and not args.json:
        print(f"\n{len(pset.problems)} user preset file(s) skipped:", file=sys.stderr)
        for e in pset.problems:
            print(f"  {e.message}", file=sys.stderr)
    return 0


# --- reading and validating one file ---------------------------------------------------------

@dataclass
class _File:
    preset: Preset
    path: Path


def _read_folder(folder: Path, origin: str) -> tuple[list[_File], list[PresetError]]:
    good: list[_File] = []
    bad: list[PresetError] = []
    if not folder.is_dir():
        return good, bad
    try:  # hidden files are editors' locks and backups, not presets
        paths = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
    except OSError as e:
        if origin == BUILT_IN:
            raise
        err = PresetError(f"The preset folder {folder} cannot be listed ({e}).",
                          "Check the folder's permissions.")
        err.path, err.preset, err.key, err.line = folder, None, None, None
        return good, [err]
    for path in paths:
        try:
            good.append(_File(_read_file(path, origin), path))
        except PresetError as e:
            if origin == BUILT_IN:
                raise
            bad.append(e)
    return good, bad


def _read_file(path: Path, origin: str) -> Preset:
    hint = _HINT_BUILTIN if origin == BUILT_IN else _HINT_FILE
    stem = path.stem

    def fail(what: str, key: str | None = None, line: int | None = None,
             preset: str | None = stem, extra_hint: str = "") -> PresetError:
        return _make_error(path, preset, key, line, what, (extra_hint + " " + hint).strip())

    text = _read_text(path, fail)
    _check_shape(text, fail)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        what = getattr(e, "problem", None) or str(e)
        raise fail(f"is not valid YAML: {what}", line=mark.line + 1 if mark else None) from None
    except ValueError as e:  # PyYAML's constructors call int(), date() ... on the raw text
        raise fail(_unreadable_value(e)) from None
    except RecursionError:  # _check_shape bounds the depth; this is the last line of defence
        raise fail(f"nests deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        kind = "empty" if data is None else type_name(data)
        raise fail(f"is {kind}, not a mapping of keys to values",
                   extra_hint="A preset file holds lines like `iterations: 300`.")

    nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(data_key := _scalar_key(loader, key_node), str):
            raise fail(f"has a key that is not a name: {_excerpt(key)}", line=line)
        if data_key in nodes:
            first = nodes[data_key][0].start_mark.line + 1
            raise fail(f"sets '{data_key}' twice (lines {first} and {line})", key=data_key,
                       line=line)
        nodes[data_key] = (key_node, value_node)
    lines = {k: kn.start_mark.line + 1 for k, (kn, _) in nodes.items()}

    name = data.get("name", stem)
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r\t") \
            or len(name.strip()) > MAX_NAME:
        raise fail(f"has a bad name {_excerpt(name)}: use a short text (at most {MAX_NAME} "
                   f"characters on one line) such as '{cut(stem)}'", key="name",
                   line=lines.get("name"))
    name = name.strip()
    for key in ("label", "description", "extends"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise fail(f"must be a text, not {type_name(value)}", key=key, line=lines[key],
                       preset=name)

    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in META_KEYS:
            continue
        spec = PARAM_FIELDS.get(key)
        if spec is None:
            raise fail("is not a preset key" + did_you_mean_tail(key, [*PARAM_FIELDS,
                                                                        *META_KEYS]),
                       key=key, line=lines[key], preset=name)
        value_node = nodes[key][1]
        plain = isinstance(value_node, yaml.ScalarNode) and value_node.style is None
        problem, checked = check_value(spec.metadata, value, plain=plain)
        if problem:
            bad_line = lines[key]
            layer = _layer_in(problem)
            if layer is not None and isinstance(value_node, yaml.MappingNode):
                bad_line = next((kn.start_mark.line + 1 for kn, _ in value_node.value
                                 if getattr(kn, "value", None) == layer), bad_line)
            raise fail(problem, key=key, line=bad_line, preset=name)
        values[key] = checked
    return Preset(name=name, label=(data.get("label") or name).strip(),
                  description=(data.get("description") or "").strip(), source=path,
                  origin=origin, values=MappingProxyType(values),
                  extends=(data.get("extends") or "").strip() or None,
                  lines=MappingProxyType(lines))


def _read_text(path: Path, fail) -> str:
    """The file's text, if it is a regular file within MAX_FILE_BYTES.

    Opened without blocking and checked on the open descriptor: a FIFO named ``x.yaml`` would
    otherwise hang every command that lists presets.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail("is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise fail(f"is {st.st_size} bytes, over the limit of {MAX_FILE_BYTES} for a "
                       "preset file, so it was not read")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # it may have grown since fstat
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise fail(f"is over the limit of {MAX_FILE_BYTES} bytes for a preset file, so it was "
                   "not read")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"is not UTF-8 text (byte {e.start})") from None


def _check_shape(text: str, fail) -> None:
    """Refuse deep nesting and alias bombs from the event stream, before any node is built.

    PyYAML's composer recurses once per level, and aliases share one object that a message or
    a JSON dump would expand: both are bounded here, where nothing recurses or expands.
    """
    depth = 0
    sizes: list[int] = []  # expanded node count of each open collection
    anchored: dict[str, int] = {}
    anchors: list[str | None] = []
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                size = anchored.get(event.anchor, 1)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise fail(f"nests deeper than {MAX_DEPTH} levels",
                               line=event.start_mark.line + 1)
                sizes.append(1)
                anchors.append(event.anchor)
                continue
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
                size, anchor = sizes.pop(), anchors.pop()
                if anchor is not None:
                    anchored[anchor] = size
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    anchored[event.anchor] = 1
            else:
                continue
            if sizes:
                sizes[-1] += size
            if size > MAX_NODES or (sizes and sizes[-1] > MAX_NODES):
                raise fail(f"expands to more than {MAX_NODES} values (aliases counted each "
                           "time they are used)", line=event.start_mark.line + 1)
    except yaml.YAMLError:
        return  # the composer below reports it with its line


def _unreadable_value(e: ValueError) -> str:
    if "integer string conversion" in str(e):
        return "has a number with too many digits to read"
    return f"has a value that cannot be read ({cut(str(e))})"


def _scalar_key(loader: yaml.SafeLoader, key_node: yaml.Node) -> Any:
    if not isinstance(key_node, yaml.ScalarNode):
        return None
    return loader.construct_object(key_node)


def _layer_in(problem: str) -> str | None:
    m = re.search(r"layer '([^']*)'", problem)
    return m.group(1) if m else None


# --- combining files ---------------------------------------------------------------------------

def _by_name(files: Iterable[_File], origin: str, *, broken: dict[str, PresetError],
             problems: list[PresetError]) -> dict[str, Preset]:
    by_name: dict[str, list[_File]] = {}
    for f in files:
        by_name.setdefault(f.preset.name, []).append(f)
    out: dict[str, Preset] = {}
    for name, same in by_name.items():
        if len(same) == 1:
            out[name] = same[0].preset
            continue
        paths = ", ".join(str(f.path) for f in same)
        err = _make_error(same[1].path, name, "name", same[1].preset.lines.get("name"),
                          f"uses the name '{name}', which {len(same) - 1} other file(s) also "
                          f"use: {paths}",
                          "Give each preset its own name (the `name:` key or the file name).")
        if origin == BUILT_IN:
            raise err
        problems.append(err)
        broken[name] = err
    return out


def _check_chains(pset: PresetSet) -> None:
    """Follow every extends chain now, so a broken one is reported up front, not mid-run."""
    while True:  # removing one preset can break the ones that extend it
        failed: dict[str, PresetError] = {}
        for name, preset in pset.presets.items():
            try:
                pset.chain(name)
            except PresetError as e:
                if preset.origin == BUILT_IN:
                    raise
                failed[name] = e
        if not failed:
            return
        for name, e in failed.items():  # all at once, so each loop member names itself
            pset.problems.append(e)
            pset.broken[name] = e
            del pset.presets[name]


def _merged(pset: PresetSet, name: str) -> dict[str, Any]:
    values = {f.name: getattr(StyleParams(), f.name) for f in fields(StyleParams)}
    for preset in pset.chain(name):
        values.update(preset.values)
    return values


# --- messages ----------------------------------------------------------------------------------

def _make_error(path: Path, preset: str | None, key: str | None, line: int | None, what: str,
                hint: str) -> PresetError:
    """One line naming the file, preset, key and line; the user's text only as excerpts."""
    where = f"{path}"
    if preset is not None:
        where += f", preset '{cut(preset)}'"
    if key is not None:
        where += f", key '{cut(key)}'"
    if line is not None:
        where += f" (line {line})"
    subject = "" if key is not None else "the file "
    what = cut(" ".join(what.split()), 6 * EXCERPT)
    err = PresetError(f"{where}: {subject}{what.rstrip('.')}.", hint)
    err.path, err.preset, err.key, err.line = path, preset, key, line
    return err


def _error(preset: Preset, key: str, what: str, hint: str) -> PresetError:
    return _make_error(preset.source, preset.name, key, preset.lines.get(key), what, hint)


# --- output ------------------------------------------------------------------------------------

def _entry(p: Preset) -> dict[str, Any]:
    return {"name": p.name, "label": p.label, "description": p.description, "origin": p.origin,
            "source": str(p.source)}


def _problem_entry(e: PresetError) -> dict[str, Any]:
    path = getattr(e, "path", None)
    return {"file": str(path) if path else None, "preset": getattr(e, "preset", None),
            "key": getattr(e, "key", None), "line": getattr(e, "line", None),
            "message": e.message, "hint": e.hint}


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def _print_list(pset: PresetSet, out) -> None:
    rows = [(p.name + (" *" if p.name == config.DEFAULT_PRESET else ""), p.label,
             f"{p.origin}: {p.source}") for _, p in sorted(pset.presets.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(2)] if rows else [0, 0]
    for name, label, origin in rows:
        out.write(f"{name:<{widths[0]}}  {label:<{widths[1]}}  {origin}\n")
    out.write(f"(* = the default; user presets: {config.user_presets_dir()})\n")


def _print_show(preset: Preset, chain: list[Preset], values: Mapping[str, Any], out) -> None:
    set_by = {}
    for p in chain:
        for key in p.values:
            set_by[key] = p.name
    out.write(f"# {preset.name}: {preset.label}\n")
    if preset.description:
        out.write(f"# {preset.description}\n")
    out.write(f"# {preset.origin}: {preset.source}\n")
    if len(chain) > 1:
        out.write(f"# extends: {' -> '.join(p.name for p in chain)}\n")
    width = max(len(k) for k in values)
    for key, value in _jsonable(values).items():
        origin = f"from {set_by[key]}" if key in set_by else "default"
        out.write(f"{key + ':':<{width + 1}} {json.dumps(value)}  # {origin}\n")
