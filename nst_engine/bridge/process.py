"""The engine's processes as the operating system sees them: the environment they get, the
platform's ``Popen`` options, Windows' kill-on-close Job Object, killing one with its helpers,
and ``list_presets`` (a short-lived ``presets --json`` process).

POSIX: the engine gets its own session, so terminal signals meant for GIMP don't reach it
mid-write, and a kill takes the session's process group (an ``ssh`` or wrapper script's children
too). Windows: GIMP runs plug-ins with ``pythonw.exe``, so children get no console window, and
the engine is put in a Job Object that kills it when the plug-in's handle closes (written from
the Win32 documentation, not tested on Windows here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Mapping, Sequence

from .errors import EngineFailed
from .logs import TAIL_BYTES
from .wire import Code


def child_env(pythonpath: str | Sequence[str] | None = None,
              env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: GIMP's Python paths removed, ours set if given."""
    out = dict(os.environ if env is None else env)
    out.pop("PYTHONPATH", None)
    out.pop("PYTHONHOME", None)
    if pythonpath:
        paths = [pythonpath] if isinstance(pythonpath, (str, os.PathLike)) else pythonpath
        out["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    out["PYTHONUNBUFFERED"] = "1"  # library prints reach the log before a crash, not after
    return out


def popen_kwargs(*, own_session: bool = True) -> dict[str, Any]:
    """``own_session`` (POSIX): a session of its own, so GIMP's terminal signals miss it and
    ``kill`` can take its process group; a short-lived ``presets --json`` needs none."""
    if sys.platform == "win32":
        # GIMP runs plug-ins with pythonw.exe: no console, so none for the child either.
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {"start_new_session": True} if own_session else {}


def kill_on_close_job(proc: subprocess.Popen) -> Any:
    """Windows only: a Job Object with KILL_ON_JOB_CLOSE holding the engine. When the plug-in
    dies its handles close and Windows ends the engine. Returns the handle (keep it open, then
    ``close_job``), or None where unavailable. Untested here (no Windows): failures are ignored,
    stdin EOF still stops the engine."""
    if sys.platform != "win32":
        return None
    try:
        import ctypes
        from ctypes import wintypes

        class IoCounters(ctypes.Structure):
            _fields_ = [(n, ctypes.c_ulonglong) for n in (
                "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
                "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

        class BasicLimits(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                        ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD),
                        ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t),
                        ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t),
                        ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class ExtendedLimits(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", BasicLimits),
                        ("IoInfo", IoCounters),
                        ("ProcessMemoryLimit", ctypes.c_size_t),
                        ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t),
                        ("PeakJobMemoryUsed", ctypes.c_size_t)]

        JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        k32.CreateJobObjectW.restype = wintypes.HANDLE
        k32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
        k32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p,
                                                wintypes.DWORD]
        k32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
        job = k32.CreateJobObjectW(None, None)
        if not job:
            return None
        info = ExtendedLimits()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not (k32.SetInformationJobObject(job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                            ctypes.byref(info), ctypes.sizeof(info))
                and k32.AssignProcessToJobObject(job, int(proc._handle))):  # type: ignore[attr-defined]
            k32.CloseHandle(job)
            return None
        return job
    except Exception:
        return None


def close_job(job: Any) -> None:
    """Let go of ``kill_on_close_job``'s handle (the engine has exited by then)."""
    import ctypes
    ctypes.WinDLL("kernel32").CloseHandle(job)  # type: ignore[attr-defined]


def kill(proc: subprocess.Popen) -> None:
    """Kill the engine and, on POSIX, its session's process group (an ``ssh`` or wrapper
    script's children too)."""
    if sys.platform != "win32":
        import signal
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except OSError:
            pass
    proc.kill()


def list_presets(cfg: Mapping[str, Any], timeout: float = 60.0) -> Any:
    """Run ``cfg["presets_command"]`` (argv printing ``presets --json``) and return its parsed
    JSON. Raises EngineFailed(``presets_unavailable``)."""
    argv = cfg.get("presets_command")
    hint = "Run `python install.py` again to rewrite the Style Transfer configuration."
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           "The configuration has no valid 'presets_command'.", hint)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env=child_env(cfg.get("engine_pythonpath")),
                              **popen_kwargs(own_session=False))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"Listing the presets failed: {argv[0]!r}: {e}.", hint) from None
    err = done.stderr.decode("utf-8", "replace").strip()[-TAIL_BYTES:]
    if done.returncode != 0:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"Listing the presets failed (exit status {done.returncode}): {err}",
                           hint)
    try:
        return json.loads(done.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise EngineFailed(Code.PRESETS_UNAVAILABLE,
                           f"The preset list is not valid JSON ({e}). {err}", hint) from None
