"""nst_engine.device.heap: during a CPU run large blocks come from the heap, and glibc's settings are
back when the last run ends."""

import ctypes
import threading

import pytest

from nst_engine.device import heap

#: Above glibc's largest mmap threshold (32 MB), so mmapped by default, and larger than any free
#: chunk the suite's small runs leave in the heap. Never touched: it costs address space only.
BLOCK = 256 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    if heap._libc is None or not hasattr(heap._libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    libc = heap._libc
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _MallInfo2
    return libc


def _mmapped(libc, size: int = BLOCK) -> bool:
    """Whether a fresh large block is served by mmap (glibc's default) or by the heap. (A free
    chunk already in the heap serves a block whatever the settings.)"""
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    assert block
    try:
        return libc.mallinfo2().hblkhd - before >= size
    finally:
        libc.free(block)


def test_large_blocks_come_from_the_heap_only_during_a_run():
    libc = _libc()
    assert _mmapped(libc)
    with heap.reuse_freed_memory():
        assert not _mmapped(libc)
    assert _mmapped(libc)


def test_settings_are_restored_when_the_last_of_overlapping_runs_ends():
    libc = _libc()
    first_in, second_done = threading.Event(), threading.Event()
    seen = {}

    def second():
        first_in.wait(10)
        with heap.reuse_freed_memory():
            pass
        second_done.set()

    t = threading.Thread(target=second)
    t.start()
    with heap.reuse_freed_memory():
        first_in.set()
        assert second_done.wait(10)
        seen["after the other run ended"] = _mmapped(libc)
    t.join(10)
    assert seen == {"after the other run ended": False}
    assert _mmapped(libc)


def test_disabled_or_after_an_error_changes_nothing():
    libc = _libc()
    with heap.reuse_freed_memory(enabled=False):
        assert _mmapped(libc)
    with pytest.raises(RuntimeError):
        with heap.reuse_freed_memory():
            raise RuntimeError("a failed run")
    assert _mmapped(libc)


def test_a_cpu_run_keeps_the_heap_while_it_optimises_and_not_after(random_weights_file):
    from PIL import Image

    from nst_engine import StyleParams
    from nst_engine.transfer import stylize

    libc = _libc()
    seen = []

    def progress(p):
        if p.stage == "optimizing" and not seen:
            seen.append(_mmapped(libc))

    img = Image.new("RGB", (64, 48), (90, 140, 60))
    stylize(content=img, styles=[(img, 1.0)], device="cpu", weights=random_weights_file,
            params=StyleParams().with_overrides(max_size=64, levels=1, iterations=2, seed=0),
            progress=progress)
    assert seen == [False]
    assert _mmapped(libc)
