"""``python install.py``: the five steps, each printed as ``[n/5]``, and what a failure prints.

Each step leaves what it finished in the manifest, so running the installer again continues
where a failed or interrupted run stopped, and changes nothing that is already right."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nst_engine.bridge import config as nst_config

from .configuration import build_config, earlier_device, earlier_keep_warm, write_config
from .engine import (MIN_PYTHON, Engine, missing_modules, missing_packages_error,
                     package_versions, pip_commands, python_version, stop_warm_engine,
                     venv_python)
from .errors import InstallError, write_error
from .files import Manifest, engine_hash, listing, manifest_path, sha256_file, stamp, sync_tree
from .layout import CHECKOUT, ENGINE_SRC
from .log import Log, say
from .plugin import install_plugin
from .profiles import (FLATPAK_WARNING, Profile, find_profiles, flatpak_paths, no_profile_error,
                       profiles_from_args)
from .selfcheck import self_check


@dataclass
class Ctx:
    """The installer's state through one run."""
    args: argparse.Namespace
    log: Log
    manifest: Manifest
    profiles: list[Profile] = field(default_factory=list)
    engine: Engine | None = None
    weights: Path | None = None


def step_engine(ctx: Ctx) -> None:
    """[1/5] A venv in data_dir()/venv with the engine installed, or --python as it is."""
    if ctx.args.python:
        _use_python(ctx)
    else:
        _use_venv(ctx)


def _use_python(ctx: Ctx) -> None:
    args, m = ctx.args, ctx.manifest
    python = shutil.which(args.python) or args.python
    python = str(Path(python).absolute())
    version = python_version(python)
    if version is None:
        raise InstallError(f"--python {args.python}: it does not run as a Python interpreter.",
                           "Give the path of a python3 executable, e.g. /usr/bin/python3.")
    if version[:2] < MIN_PYTHON:
        raise InstallError(
            f"--python {python} is Python {'.'.join(map(str, version))}; the engine "
            f"needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer.",
            "Give a newer interpreter, or leave out --python to get a venv.")
    # The engine in this checkout is what gets installed for this interpreter: ask it.
    report = Engine(python, [str(CHECKOUT)]).doctor("--quick")
    if report is None:
        raise InstallError(f"The engine does not start with {python}.",
                           f"See what it says: `{python} -m nst_engine doctor` run in "
                           f"{CHECKOUT}.")
    if missing_modules(report):
        raise missing_packages_error(python, report)
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
    versions = package_versions(report)
    m.data["engine"] = {"mode": "python", "python": python, "pythonpath": pythonpath,
                        "engine_hash": engine_hash(), "link": bool(args.link)}
    m.save()
    say(f"      {how}" + (f" ({versions})" if versions else ""))


def _use_venv(ctx: Ctx) -> None:
    args, m = ctx.args, ctx.manifest
    want_hash = engine_hash()
    venv = nst_config.data_dir() / "venv"
    python = str(venv_python(venv))
    ctx.engine = Engine(python)
    record = m.data.get("engine") or {}
    current = (record.get("mode") == "venv" and record.get("engine_hash") == want_hash
               and record.get("torch_index_url") == args.torch_index_url
               and record.get("link") == bool(args.link) and Path(python).is_file())
    if current:
        report = ctx.engine.doctor("--quick")
        if report is not None and not missing_modules(report):
            say(f"      venv {venv} is up to date")
            return
    if not Path(python).is_file():
        say(f"      creating a venv in {venv}")
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
    say("      installing the engine and PyTorch with pip (a download of 1-3 GB the first "
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
    say(f"      installed into {venv}")


def step_weights(ctx: Ctx) -> None:
    """[2/5] The compact VGG19 cache, from --weights FILE or torch.hub's checked download."""
    args, m, engine = ctx.args, ctx.manifest, ctx.engine
    assert engine is not None
    env = engine.env()
    report = engine.doctor("--quick")
    if report is None or "weights" not in report:
        raise InstallError("The engine does not run: it could not even say where its weights go.",
                           "Run `python install.py --check` for details.")
    cache = Path(report["weights"]["default_path"])
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
        source == "download" or record.get("source_stamp") == stamp(Path(source)))
    # Without --weights, weights installed earlier (from a file or a download) are kept.
    if cache.is_file() and record.get("path") == str(cache) and (same_source or not args.weights):
        if record.get("sha256") == sha256_file(cache):
            say(f"      {cache} is in place ({'from ' + record['source'] if record['source'] != 'download' else 'downloaded'})")
            ctx.weights = cache
            return
    before = listing(cache.parent)
    m.make_dirs(cache.parent)
    if args.weights:
        ran = ctx.log.run(engine.argv("fetch-weights", "--from-file", source), env=env, echo=True)
    else:
        ran = ctx.log.run(engine.argv("fetch-weights"), env=env, echo=True)
    for p in sorted(listing(cache.parent) - before):
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
    m.data["weights"] = {"path": str(cache), "source": source, "sha256": sha256_file(cache),
                         "source_stamp": stamp(Path(source)) if args.weights else None}
    m.save()
    ctx.weights = cache


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
        say(f"      {profile.label()}: {what}")


def step_config(ctx: Ctx) -> None:
    """[4/5] config.json for the plug-in; one more inside each Flatpak GIMP's sandbox."""
    m = ctx.manifest
    assert ctx.engine is not None and ctx.weights is not None
    device = ctx.args.device or earlier_device()
    path = nst_config.config_path()
    keep_warm = earlier_keep_warm()
    wrote = write_config(build_config(ctx.engine, ctx.weights, device, keep_warm=keep_warm),
                         path, m)
    configs = [str(path)]
    say(f"      {path}: {'written' if wrote else 'up to date'} (device {device})")
    for profile in ctx.profiles:
        if not profile.flatpak:
            continue
        fpath, flog = flatpak_paths(profile)
        cfg = build_config(ctx.engine, ctx.weights, device, flatpak=True, keep_warm=keep_warm)
        cfg["log_dir"] = str(flog)
        wrote = write_config(cfg, fpath, m)
        configs.append(str(fpath))
        say(f"      {fpath}: {'written' if wrote else 'up to date'} (Flatpak)")
        say("      " + FLATPAK_WARNING.replace("\n", "\n      "))
    m.data["configs"] = sorted(set(m.data.get("configs", [])) | set(configs))
    m.save()


def step_self_check(ctx: Ctx) -> None:
    """[5/5] The engine through the bridge, then what to click in GIMP."""
    cfg = nst_config.load_config()
    say(f"      {self_check(cfg)}")


STEPS = (("Engine environment", step_engine), ("Weights", step_weights),
         ("Plug-in", step_plugin), ("Configuration", step_config),
         ("Self-check", step_self_check))

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
            say(f"Using {args.python} as at the last install (--uninstall first to switch "
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
    say("Found " + ", ".join(p.label() for p in profiles))
    if any(p.flatpak for p in profiles):
        say("Note: " + FLATPAK_WARNING)
    manifest = Manifest(manifest_path())
    reuse_earlier_choices(args, manifest)
    stop_warm_engine()
    log_dir = nst_config.default_log_dir()
    try:
        manifest.make_tree(log_dir)
        log = Log(log_dir / "install.log")
    except OSError as e:
        raise write_error(e, "the installer's log") from None
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} install.py {' '.join(sys.argv[1:])} "
              f"(Python {sys.version.split()[0]}, {sys.platform})")
    ctx = Ctx(args, log, manifest, profiles)
    total = len(STEPS)
    try:
        for n, (title, run) in enumerate(STEPS, 1):
            say(f"[{n}/{total}] {title}")
            log.write(f"--- [{n}/{total}] {title}")
            try:
                try:
                    run(ctx)
                except OSError as e:
                    raise write_error(e) from None
                finally:
                    try:
                        manifest.save()
                    except OSError:
                        pass
            except InstallError as e:
                log.write(f"FAILED: {e.message}\n{e.hint}")
                print(f"\n[{n}/{total}] {title} FAILED: {e.message}", file=sys.stderr)
                if e.hint:
                    print(f"  What to do: {e.hint}", file=sys.stderr)
                print(f"  Log: {log.path}", file=sys.stderr)
                if n > 1:
                    done = "Step 1 is" if n == 2 else f"Steps 1-{n - 1} are"
                    print(f"  {done} done and kept; run the installer again to continue.",
                          file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"\n[{n}/{total}] {title}: interrupted. Run the installer again to "
                      "continue; finished steps are kept.", file=sys.stderr)
                return 130
    finally:
        log.close()
    say(WHAT_TO_CLICK.format(logs=log_dir))
    return 0
