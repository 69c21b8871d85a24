"""What the user and the log see: lines on the terminal, ``data_dir()/logs/install.log``, and
the subprocesses whose whole output goes there."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def say(text: str) -> None:
    print(text, flush=True)


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
            cwd: Path | None = None) -> Ran:
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
