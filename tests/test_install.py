"""install.py, run as a user runs it: a subprocess into temporary HOME / XDG / NST_* folders.

The engine is this test venv's own Python (``--python sys.executable``: it has torch) and the
weights a random-weight file, so nothing is downloaded. One install (with its self-check, which
starts the engine and imports torch) is shared by the module's tests, which run in file order:
install, checks, breakage, and last the uninstall that must restore every profile exactly.

Not exercised here: the venv route's pip install of torch (gigabytes from PyPI). Its commands are
checked as data, and a real venv is created and pip's failure (no index) reported.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "nst-style-transfer"


def _load_install_module():
    spec = importlib.util.spec_from_file_location("nst_install", ROOT / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


install = _load_install_module()

# install.py has put this checkout first on sys.path: its installer/ package, not any other.
from installer import engine as install_engine  # noqa: E402
from installer.configuration import build_config, earlier_keep_warm  # noqa: E402
from installer.files import MANIFEST_NAME, Manifest  # noqa: E402
from installer.layout import BRIDGE_SRC, PLUGIN_MODULES, PLUGIN_SRC  # noqa: E402
from installer.plugin import install_plugin  # noqa: E402
from installer.profiles import Profile, find_profiles  # noqa: E402
from installer.uninstall import uninstall  # noqa: E402
from nst_engine.bridge import config as nst_config  # noqa: E402


# ------------------------------------------------------------------------------------------
# helpers

def _stable_checkout(dst: Path) -> Path:
    """A copy of the parts install.py uses: other people edit the real tree while tests run,
    and the installer compares sources, so a moving target would make 'no-op' tests flaky."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("nst_engine", "gimp_plugin", "installer"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    for name in ("install.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dst / name)
    return dst


def _env(home: Path, data: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "GIMP3_DIRECTORY") and not k.startswith("NST_")
           and not k.startswith("XDG_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"),
               NST_DATA_DIR=str(data), NST_CONFIG_DIR=str(config), PYTHONDONTWRITEBYTECODE="1")
    # The tests' own warm-engine folder (conftest.py): the installer stops the engine in it.
    env["NST_RUNTIME_DIR"] = os.environ["NST_RUNTIME_DIR"]
    return env


def run_installer(checkout: Path, env: dict[str, str], *args: str, prefix: tuple[str, ...] = (),
                  timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, str(checkout / "install.py"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


#: What runtimes started by the installer (its self-check imports torch) write into a home of
#: their own accord, e.g. CUDA's ~/.nv/ComputeCache: not the installer's doing, so the tests that
#: compare a home before and after leave them out.
RUNTIME_CACHES = (".nv", ".cache", ".triton")


def snapshot(root: Path, with_times: bool = False, skip: tuple[str, ...] = ()) -> dict:
    """Every path under ``root``: kind, mode, contents' hash or link target (and mtime)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = p.lstat()
        if p.is_symlink():
            what = ("link", os.readlink(p))
        elif p.is_dir():
            what = ("dir", stat.S_IMODE(st.st_mode))
        else:
            what = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
        out[rel] = what + ((st.st_mtime_ns,) if with_times else ())
    return out


def _out(res: subprocess.CompletedProcess) -> str:
    return res.stdout + res.stderr


# ------------------------------------------------------------------------------------------
# the shared install

class Setup:
    pass


@pytest.fixture(scope="module")
def inst(tmp_path_factory, random_weights_file) -> Setup:
    s = Setup()
    base = tmp_path_factory.mktemp("install")
    s.checkout = _stable_checkout(base / "checkout")
    s.home = base / "home"
    s.data = base / "data"
    s.config = base / "config"
    s.env = _env(s.home, s.data, s.config)
    gimp = s.home / ".config" / "GIMP"
    s.p30, s.p32 = gimp / "3.0", gimp / "3.2"
    s.flatpak = s.home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    # 3.0 already has a profile and another plug-in; 3.2 has no plug-ins folder yet.
    (s.p30 / "plug-ins" / "other").mkdir(parents=True)
    (s.p30 / "plug-ins" / "other" / "other.py").write_text("# someone else's plug-in\n")
    (s.p30 / "gimprc").write_text("(theme \"Dark\")\n")
    s.p32.mkdir(parents=True)
    (s.p32 / "sessionrc").write_text("# 3.2\n")
    (gimp / "2.10" / "plug-ins").mkdir(parents=True)
    s.flatpak.mkdir(parents=True)
    s.custom = base / "custom-profile"          # for --gimp-dir, later
    (s.custom / "plug-ins").mkdir(parents=True)
    s.before = {p: snapshot(p, skip=RUNTIME_CACHES) for p in (s.home, s.custom)}
    s.weights_src = random_weights_file
    s.args = ("--python", sys.executable, "--weights", str(random_weights_file))
    s.first = run_installer(s.checkout, s.env, *s.args)
    assert s.first.returncode == 0, _out(s.first)
    return s


def _plugin_ok(profile: Path, checkout: Path) -> None:
    script = profile / "plug-ins" / PLUGIN / f"{PLUGIN}.py"
    assert script.is_file() and not script.is_symlink()
    assert os.access(script, os.X_OK), f"{script} lacks its exec bit"
    assert script.read_bytes() == (checkout / "gimp_plugin" / PLUGIN / f"{PLUGIN}.py").read_bytes()
    bridge = profile / "plug-ins" / PLUGIN / "nst_bridge"
    src = sorted(p.name for p in (checkout / "nst_engine" / "bridge").glob("*.py"))
    assert sorted(p.name for p in bridge.glob("*.py")) == src
    for name in src:
        assert (bridge / name).read_bytes() == (checkout / "nst_engine" / "bridge" / name).read_bytes()
    # The plug-in's folder holds what the plug-in imports, and nothing of the installer.
    assert sorted(p.name for p in script.parent.iterdir()) == sorted(
        [script.name, "nst_bridge", *(m.name for m in PLUGIN_MODULES)])


def test_install_finds_every_gimp3_profile_and_places_the_plugin(inst):
    out = _out(inst.first)
    for n in range(1, 6):
        assert f"[{n}/5]" in out
    assert "GIMP 3.0 at" in out and "GIMP 3.2 at" in out and "GIMP 3.0 (Flatpak)" in out
    assert "2.10" not in out.split("[1/5]")[0]
    for profile in (inst.p30, inst.p32, inst.flatpak):
        _plugin_ok(profile, inst.checkout)
    assert not (inst.home / ".config" / "GIMP" / "2.10" / "plug-ins" / PLUGIN).exists()
    # Someone else's plug-in and settings are untouched.
    assert (inst.p30 / "plug-ins" / "other" / "other.py").read_text() == "# someone else's plug-in\n"
    assert "stylized a 16x16 test image" in out
    assert "Filters > Style Transfer" in out


def test_python_route_uses_the_interpreter_as_is_and_creates_no_venv(inst):
    assert not (inst.data / "venv").exists()
    cfg = json.loads((inst.config / "config.json").read_text())
    assert cfg["engine_command"][:4] == [sys.executable, "-m", "nst_engine", "serve"]
    assert cfg["presets_command"] == [sys.executable, "-m", "nst_engine", "presets", "--json"]
    assert cfg["engine_pythonpath"] == [str(inst.data / "engine")]
    copied = inst.data / "engine" / "nst_engine"
    assert (copied / "server" / "session.py").read_bytes() == \
        (inst.checkout / "nst_engine" / "server" / "session.py").read_bytes()
    assert (copied / "presets" / "quick.yaml").is_file()
    assert [p.name for p in (inst.data / "engine").iterdir()] == ["nst_engine"]  # no installer/
    assert cfg["device"] == "auto" and cfg["hello_timeout"] >= 60
    assert cfg["log_dir"] == str(inst.data / "logs")
    assert (inst.data / "logs" / "install.log").is_file()


def test_weights_from_a_local_file_become_the_configured_cache(inst):
    cfg = json.loads((inst.config / "config.json").read_text())
    cache = inst.data / "weights" / "vgg19-convs.pt"
    assert cfg["weights"] == str(cache) and cache.is_file()
    assert cfg["engine_command"][-2:] == ["--weights", str(cache)]
    assert inst.weights_src.is_file()  # the user's file is read, not moved
    assert "NOT verified" in _out(inst.first)  # random weights are never passed off as real


def test_flatpak_profile_gets_a_sandbox_config_that_starts_the_engine_on_the_host(inst):
    app = inst.home / ".var" / "app" / "org.gimp.GIMP"
    cfg = json.loads((app / "config" / "nst-style-transfer" / "config.json").read_text())
    cmd = cfg["engine_command"]
    assert cmd[:3] == ["flatpak-spawn", "--host", "--watch-bus"]
    assert f"--env=PYTHONPATH={inst.data / 'engine'}" in cmd
    assert cmd[cmd.index(sys.executable):][:4] == [sys.executable, "-m", "nst_engine", "serve"]
    assert cfg["presets_command"][0] == "flatpak-spawn" and "engine_pythonpath" not in cfg
    assert cfg["log_dir"] == str(app / "data" / "nst-style-transfer" / "logs")
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak" in _out(inst.first)


def test_second_run_changes_nothing(inst):
    roots = (inst.home, inst.config, inst.data)
    before = [snapshot(r, with_times=True, skip=("logs", *RUNTIME_CACHES)) for r in roots]
    res = run_installer(inst.checkout, inst.env, *inst.args)
    assert res.returncode == 0, _out(res)
    after = [snapshot(r, with_times=True, skip=("logs", *RUNTIME_CACHES)) for r in roots]
    assert after == before
    out = _out(res)
    assert "is up to date" in out and "is in place" in out and "written" not in out
    assert out.count(": up to date") >= 3  # each profile's plug-in


def test_check_passes_after_install(inst):
    res = run_installer(inst.checkout, inst.env, "--check")
    out = _out(res)
    assert res.returncode == 0, out
    assert "FAIL" not in out and "All parts OK" in out
    for label in ("GIMP 3.0 at", "GIMP 3.2 at", "GIMP 3.0 (Flatpak)"):
        assert f"OK    plug-in in {label}" in out
    assert "OK    self-check" in out and "OK    weights" in out


def test_check_names_missing_weights(inst):
    cache = inst.data / "weights" / "vgg19-convs.pt"
    aside = cache.with_name("aside")
    cache.rename(aside)
    try:
        res = run_installer(inst.checkout, inst.env, "--check")
    finally:
        aside.rename(cache)
    out = _out(res)
    assert res.returncode != 0
    assert "FAIL  weights:" in out and str(cache) in out and "--weights FILE" in out
    assert "OK    plug-in in GIMP 3.2" in out  # only the broken part is blamed
    assert "FAIL  self-check: not run" in out


def test_check_names_corrupt_config_and_a_plugin_without_exec_bit(inst):
    cfg = inst.config / "config.json"
    good = cfg.read_bytes()
    script = inst.p32 / "plug-ins" / PLUGIN / f"{PLUGIN}.py"
    cfg.write_text("{ this is not json")
    script.chmod(0o644)
    try:
        res = run_installer(inst.checkout, inst.env, "--check")
    finally:
        cfg.write_bytes(good)
        script.chmod(0o755)
    out = _out(res)
    assert res.returncode != 0
    assert "FAIL  configuration:" in out and str(cfg) in out and "install.py" in out
    assert "FAIL  plug-in in GIMP 3.2" in out and "not executable" in out
    assert "OK    plug-in in GIMP 3.0 at" in out
    assert "Traceback" not in out


def test_read_only_plugins_folder_gets_a_clear_message(inst):
    target = inst.custom.parent / "ro-profile"
    (target / "plug-ins").mkdir(parents=True)
    (target / "plug-ins").chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere: drop the capability that allows it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    try:
        res = run_installer(inst.checkout, inst.env, *inst.args, "--gimp-dir", str(target),
                            prefix=prefix)
    finally:
        (target / "plug-ins").chmod(0o755)
    out = _out(res)
    assert res.returncode == 1, out
    assert "[3/5] Plug-in FAILED" in out
    assert f"in {target / 'plug-ins'}: permission denied" in out
    assert "chmod u+w" in out and str(inst.data / "logs" / "install.log") in out
    assert "Steps 1-2 are done and kept" in out and "Traceback" not in out
    assert list((target / "plug-ins").iterdir()) == []


def test_gimp_dir_installs_into_the_given_profile_and_a_rerun_keeps_earlier_choices(inst):
    # No --python, no --weights: the interpreter and weights of the last install are kept
    # (a plain re-run must not start a venv download).
    res = run_installer(inst.checkout, inst.env, "--gimp-dir", str(inst.custom))
    out = _out(res)
    assert res.returncode == 0, out
    assert f"GIMP profile at {inst.custom}: installed" in out
    _plugin_ok(inst.custom, inst.checkout)
    assert "GIMP 3.2 at" not in out  # --gimp-dir replaces the search
    assert f"Using {sys.executable} as at the last install" in out and "is in place" in out
    assert not (inst.data / "venv").exists()


def test_uninstall_leaves_every_profile_as_it_was(inst):
    presets = inst.config / "presets"
    presets.mkdir()
    (presets / "mine.yaml").write_text("name: mine\n")     # the user's own: must stay
    # What the CUDA runtime writes on a GPU machine when the self-check loads torch: not the
    # installer's, so neither installed nor uninstalled by it.
    (inst.home / ".nv" / "ComputeCache").mkdir(parents=True, exist_ok=True)
    (inst.home / ".nv" / "ComputeCache" / "index").write_bytes(b"cuda")
    # The engine's own cache of its measured CPU precision (written on first use, so it may
    # or may not exist after the self-check): ours, so it goes with the data folder.
    (inst.data / "cpu-precision.json").write_text("{}")
    res = run_installer(inst.checkout, inst.env, "--uninstall")
    out = _out(res)
    assert res.returncode == 0, out
    assert snapshot(inst.home, skip=RUNTIME_CACHES) == inst.before[inst.home]
    assert (inst.home / ".nv" / "ComputeCache" / "index").read_bytes() == b"cuda"
    assert snapshot(inst.custom) == inst.before[inst.custom]
    assert not inst.data.exists()
    assert sorted(p.name for p in inst.config.iterdir()) == ["presets"]
    assert (presets / "mine.yaml").read_text() == "name: mine\n"
    assert Path(sys.executable).is_file()
    assert "left alone: the interpreter you gave" in out
    again = run_installer(inst.checkout, inst.env, "--uninstall")
    assert again.returncode == 0 and "Nothing to uninstall" in _out(again)


# ------------------------------------------------------------------------------------------
# failures before anything is installed (no engine start)

def test_no_profile_says_where_it_looked_and_creates_nothing(tmp_path):
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    (tmp_path / "home").mkdir()
    res = run_installer(ROOT, env, "--python", sys.executable)
    out = _out(res)
    assert res.returncode == 1
    assert "No GIMP 3 profile found" in out
    assert str(tmp_path / "home" / ".config" / "GIMP") in out
    assert str(tmp_path / "home" / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP") in out
    assert "--gimp-dir" in out and "Start GIMP 3 once" in out
    assert not (tmp_path / "data").exists() and not (tmp_path / "config").exists()


def test_gimp_dir_that_does_not_exist(tmp_path):
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    res = run_installer(ROOT, env, "--gimp-dir", str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such folder" in _out(res)


def test_python_without_torch_names_the_missing_packages(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    # A Python without the engine's packages: this one with its site-packages switched off.
    fake = tmp_path / "bare-python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    fake.chmod(0o755)
    res = run_installer(ROOT, env, "--python", str(fake), "--gimp-dir", str(profile))
    out = _out(res)
    assert res.returncode == 1, out
    assert "[1/5] Engine environment FAILED" in out
    assert "torch" in out and "python3-torch" in out and "python3-yaml" in out
    assert "python3-pil" in out and "pip install torch torchvision pillow numpy pyyaml" in out
    assert "Traceback" not in out


def test_python_that_is_too_old_or_no_python_at_all(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    # Says it is 3.8 when asked, as an old interpreter would; the engine is never asked.
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 'Python 3.8.10'\n")
    old.chmod(0o755)
    res = run_installer(ROOT, env, "--python", str(old), "--gimp-dir", str(profile))
    out = _out(res)
    assert res.returncode == 1, out
    assert f"--python {old} is Python 3.8.10; the engine needs 3.10 or newer" in out
    res = run_installer(ROOT, env, "--python", str(tmp_path / "nope"), "--gimp-dir", str(profile))
    out = _out(res)
    assert res.returncode == 1, out
    assert "it does not run as a Python interpreter" in out and "Traceback" not in out
    assert not (profile / "plug-ins").exists()


def test_venv_route_creates_a_venv_and_reports_pip_failure_with_the_log(tmp_path,
                                                                          random_weights_file):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS="")   # pip must fail, fast and offline
    res = run_installer(ROOT, env, "--weights", str(random_weights_file),
                        "--gimp-dir", str(profile), "--torch-index-url",
                        "https://download.pytorch.org/whl/cpu")
    out = _out(res)
    assert res.returncode == 1, out
    venv_python = install_engine.venv_python(tmp_path / "data" / "venv")
    assert venv_python.is_file()
    log = tmp_path / "data" / "logs" / "install.log"
    assert "[1/5] Engine environment FAILED: pip could not install" in out
    assert f"Log: {log}" in out and "--python /usr/bin/python3" in out
    assert "--index-url https://download.pytorch.org/whl/cpu torch torchvision" in log.read_text()
    assert not (tmp_path / "config" / "config.json").exists()   # later steps did not run
    assert not (profile / "plug-ins").exists()
    res = run_installer(ROOT, env, "--uninstall")
    assert res.returncode == 0 and not (tmp_path / "data").exists()


def test_offline_without_weights_names_the_weights_option(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    # Offline for sure: every HTTPS request goes to a closed port; no torch.hub copy to reuse.
    env = {k: v for k, v in env.items() if k.lower() not in ("no_proxy", "https_proxy")}
    env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               TORCH_HOME=str(tmp_path / "torch-home"))
    res = run_installer(ROOT, env, "--python", sys.executable, "--gimp-dir", str(profile))
    out = _out(res)
    assert res.returncode == 1, out
    assert "[2/5] Weights FAILED: The VGG19 weights could not be downloaded" in out
    assert "download.pytorch.org" in out              # the engine's message names the file
    assert "python install.py --weights FILE" in out and "Steps 1-1 are done" not in out
    assert "Step 1 is done and kept" in out
    assert not list((tmp_path / "data" / "weights").glob("*.pth"))  # no partial download left
    assert not (profile / "plug-ins").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_weights_that_are_not_a_file_are_named_for_what_they_are(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = _env(tmp_path / "home", tmp_path / "data", tmp_path / "config")
    fifo = tmp_path / "vgg19.pth"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block the installer forever
    for path, what in ((fifo, "is not a regular file"), (tmp_path, "is a folder")):
        res = run_installer(ROOT, env, "--python", sys.executable, "--gimp-dir", str(profile),
                            "--weights", str(path), timeout=300)
        out = _out(res)
        assert res.returncode == 1, out
        assert f"--weights {path}: {what}" in out and "Traceback" not in out
    assert not (profile / "plug-ins").exists()


# ------------------------------------------------------------------------------------------
# pieces, in-process

def test_link_makes_symlinks_and_a_later_copy_never_writes_through_them(tmp_path):
    profile = Profile(tmp_path / "3.0", "3.0")
    profile.path.mkdir()
    m = Manifest(tmp_path / "manifest.json")
    src_before = PLUGIN_SRC.read_bytes()
    assert install_plugin(profile, m, link=True) == "installed (linked)"
    script = profile.plugin_dir / f"{PLUGIN}.py"
    assert script.is_symlink() and script.resolve() == PLUGIN_SRC
    assert (profile.plugin_dir / "nst_bridge").resolve() == BRIDGE_SRC
    assert install_plugin(profile, m, link=True) == "up to date (linked)"
    assert install_plugin(profile, m, link=False) == "updated"
    assert not script.is_symlink() and script.read_bytes() == src_before
    assert not (profile.plugin_dir / "nst_bridge").is_symlink()
    assert PLUGIN_SRC.read_bytes() == src_before and BRIDGE_SRC.is_dir()
    assert m.created() == [{"path": str(profile.path / "plug-ins"), "kind": "dir"},
                           {"path": str(profile.plugin_dir), "kind": "tree"}]

def test_python_too_old_gets_a_sentence(tmp_path):
    path = str(ROOT / "install.py")
    code = ("import sys; sys.version_info = (3, 8, 10, 'final', 0); sys.argv = [%r]; "
            "exec(compile(open(%r).read(), %r, 'exec'), {'__name__': '__main__', "
            "'__file__': %r})" % (path, path, path, path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1
    assert "needs Python 3.10 or newer to install; this is Python 3.8" in res.stderr
    assert "Traceback" not in res.stderr
    # The whole file must parse on an old Python for that sentence to be reached.
    ast.parse((ROOT / "install.py").read_text(), feature_version=(3, 6))


def test_install_py_checks_the_same_python_floor_as_the_engine_step():
    assert install.MIN_PYTHON == install_engine.MIN_PYTHON


def test_the_installer_asks_the_engine_and_carries_no_engine_code():
    """What the installer knows about the engine comes from the engine's own commands
    (`doctor --json`): no `python -c`, no engine code kept in a string to run elsewhere."""
    sources = [ROOT / "install.py", *sorted((ROOT / "installer").glob("*.py"))]
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = [n.value for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert "-c" not in strings, path
        assert not [t for t in strings if re.search(r"\b(import|from) nst_engine\b", t)], path


def test_pip_commands():
    cmds = install_engine.pip_commands("/v/bin/python", Path("/src"), "https://x/whl/cpu")
    assert cmds[0][-4:] == ["--index-url", "https://x/whl/cpu", "torch", "torchvision"]
    assert cmds[1][:4] == ["/v/bin/python", "-m", "pip", "install"]
    assert cmds[1][-1] == "/src[animation]"  # OpenCV's optical flow, for animations
    assert "--force-reinstall" in cmds[2] and "--no-deps" in cmds[2]
    plain = install_engine.pip_commands("/v/bin/python", Path("/src"))
    assert len(plain) == 2 and not any("--index-url" in c for c in plain)
    editable = install_engine.pip_commands("/v/bin/python", Path("/src"), editable=True)
    assert editable == [editable[0][:-2] + ["--editable", "/src[animation]"]]


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_profiles_found_on_each_platform(tmp_path, platform):
    home = tmp_path / "home"
    if platform == "win32":
        root = tmp_path / "Roaming" / "GIMP"
        environ = {"APPDATA": str(tmp_path / "Roaming")}
    elif platform == "darwin":
        root = home / "Library" / "Application Support" / "GIMP"
        environ = {}
    else:
        root = tmp_path / "xdg" / "GIMP"
        environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for name in ("2.10", "3.0", "3.10", "3.2", "3.0-old"):
        (root / name).mkdir(parents=True)
    (root / "3.4").write_text("a file, not a profile")
    found, looked = find_profiles(platform, environ, home)
    assert [(p.path, p.version, p.flatpak) for p in found] == [
        (root / "3.0", "3.0", False), (root / "3.2", "3.2", False), (root / "3.10", "3.10", False)]
    assert root in looked


def test_linux_finds_flatpak_and_gimp3_directory(tmp_path):
    home = tmp_path / "home"
    fp = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.2"
    fp.mkdir(parents=True)
    custom = tmp_path / "elsewhere"
    custom.mkdir()
    found, looked = find_profiles("linux", {"GIMP3_DIRECTORY": str(custom)}, home)
    assert [(p.path, p.version, p.flatpak) for p in found] == [
        (custom, "custom", False), (fp, "3.2", True)]
    assert home / ".config" / "GIMP" in looked


def test_uninstall_keeps_what_the_user_added_to_our_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    m = Manifest(tmp_path / "data" / MANIFEST_NAME)
    m.make_tree(tmp_path / "data" / "logs")
    m.make_dirs(tmp_path / "cfg")
    (tmp_path / "cfg" / "config.json").write_text("{}")
    m.record(tmp_path / "cfg" / "config.json", "file")
    (tmp_path / "cfg" / "user.txt").write_text("mine")
    m.record(tmp_path / "data" / "logs" / "inside-a-tree.log", "file")  # covered by the tree
    m.save()
    assert [e["kind"] for e in m.created()] == ["dir", "tree", "dir", "file"]
    assert uninstall() == 0
    assert (tmp_path / "cfg" / "user.txt").read_text() == "mine"
    assert not (tmp_path / "cfg" / "config.json").exists() and not (tmp_path / "data").exists()


# ------------------------------------------------------------------------------------------
# the warm engine

FAKE_ENGINE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from nst_engine.bridge import warm
assert warm.EngineLock(Path(sys.argv[2])).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_keep_warm_is_written_and_a_users_value_survives_a_reinstall(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path))
    assert earlier_keep_warm() == nst_config.DEFAULT_KEEP_WARM  # no config yet
    cfg = build_config(install_engine.Engine(sys.executable), tmp_path / "w.pth", "auto")
    assert cfg["keep_warm"] == nst_config.DEFAULT_KEEP_WARM
    assert build_config(install_engine.Engine(sys.executable), tmp_path / "w.pth", "auto",
                                keep_warm=0)["keep_warm"] == 0
    nst_config.save_config({"engine_command": ["python"], "keep_warm": 0})
    assert earlier_keep_warm() == 0
    nst_config.save_config({"engine_command": ["python"], "keep_warm": 30})
    assert earlier_keep_warm() == 30


@pytest.mark.skipif(os.name != "posix", reason="no warm engine on Windows")
def test_install_and_uninstall_stop_the_warm_engine(tmp_path, monkeypatch):
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="nsti")) / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("NST_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    # It holds the lock and shows the warm engine's command line: stop_engine signals only a
    # process it can show to be the engine, never a pid on the lock file's word.
    fake = subprocess.Popen([sys.executable, "-c", FAKE_ENGINE, str(ROOT), str(folder),
                             "-m", "nst_engine", "serve", "--listen", str(folder / "engine.sock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "locked"
        # --uninstall with an install record: the engine is stopped, its folder removed.
        m = Manifest(tmp_path / "data" / MANIFEST_NAME)
        m.make_tree(tmp_path / "data" / "logs")
        m.save()
        assert uninstall() == 0
        assert fake.wait(30) != 0  # SIGTERM
        assert not folder.exists()
    finally:
        fake.kill()
        fake.wait()
        shutil.rmtree(folder.parent, ignore_errors=True)
