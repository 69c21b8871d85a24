"""The dialog preview's worker (gimp_plugin/nst-style-transfer/nst_preview.py) and the fresh-engine
retry it shares with the full run (nst_engine/bridge/retry.py) without GIMP: a fake engine client
stands in for EngineClient, with the real EngineFailed. The GTK part and the real engine are
covered by tests/gimp/test_preview_e2e.py."""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path

import pytest

from nst_engine.bridge.client import EngineFailed
from nst_engine.bridge.retry import DEAD_ENGINE_CODES, FreshRetry
from nst_engine.bridge.wire import Code, RGBAImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin" / "nst-style-transfer"))
import nst_preview  # noqa: E402

WAIT = 10.0  # generous: a loaded 2-core machine; never reached when things work


class FakeClient:
    """Blocks in stylize until released or cancelled, like the engine in a long job."""

    def __init__(self, log, *, fail_start=None, fail_stylize=None, block=True, warm=False,
                 fresh=False, fresh_fails_too=False):
        self.log, self.fail_start, self.fail_stylize, self.block = log, fail_start, \
            fail_stylize, block
        self.warm, self.fresh = warm, fresh
        if fresh and not fresh_fails_too:  # a replaced warm engine works
            self.fail_start = self.fail_stylize = None
        self.cancelled = threading.Event()
        self.release = threading.Event()
        self.in_job = threading.Event()
        self.closed = False
        self.last_notices = ["weights of unknown checksum"]

    def start(self):
        self.log.append("start")
        if self.fail_start:
            raise self.fail_start

    def stylize(self, content, styles, *, preset, overrides, device, on_progress):
        self.log.append(("stylize", preset))
        self.cancelled.clear()
        self.in_job.set()
        try:
            on_progress({"stage": "optimizing", "iteration": 1, "total": 2})
            if self.fail_stylize:
                raise self.fail_stylize
            while self.block and not self.release.is_set():
                if self.cancelled.wait(0.01):
                    raise EngineFailed("cancelled", "Cancelled.")
            self.release.clear()
            return RGBAImage(content.width, content.height, bytes(reversed(content.data)))
        finally:
            self.in_job.clear()

    def cancel(self):
        self.log.append("cancel")
        self.cancelled.set()

    def close(self):
        self.log.append("close")
        self.closed = True


def job(name, w=2, h=1):
    data = bytes(range(w * h * 4))
    return nst_preview.PreviewJob(RGBAImage(w, h, data), [(RGBAImage(1, 1, b"\1\2\3\4"), 1.0)],
                                  name, {}, "cpu", (0, 0, w, h), {"preset": name})


class Harness:
    def __init__(self, **client_kwargs):
        self.log, self.clients = [], []
        self.reports: queue.Queue = queue.Queue()
        self.client_kwargs = client_kwargs

        def make_client(fresh):
            c = FakeClient(self.log, fresh=fresh, **self.client_kwargs)
            self.clients.append(c)
            return c

        self.worker = nst_preview.PreviewWorker(
            FreshRetry(make_client),
            lambda kind, gen, payload: self.reports.put((kind, gen, payload)))

    def next(self, *kinds):
        """The next report of one of ``kinds``, skipping others."""
        while True:
            kind, gen, payload = self.reports.get(timeout=WAIT)
            if kind in kinds:
                return kind, gen, payload

    def quiet(self):
        """No result or error arrives within a short wait."""
        try:
            while True:
                kind, _, _ = self.reports.get(timeout=0.5)
                assert kind not in ("result", "error"), kind
        except queue.Empty:
            return True


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.worker.close(timeout=WAIT)


def test_a_new_request_cancels_the_running_one_and_only_its_result_arrives(h):
    first = h.worker.submit(job("a"))
    assert h.next("starting")[1] == first
    h.next("progress")
    second = h.worker.submit(job("b"))
    client = h.clients[0]
    assert client.cancelled.wait(WAIT), "the running preview was not cancelled"
    h.next("progress")
    client.release.set()
    kind, gen, (result, notices) = h.next("result", "error")
    assert (kind, gen) == ("result", second)
    assert notices == ["weights of unknown checksum"]
    assert result.data == bytes(reversed(job("b").content.data))
    assert h.log.count("start") == 1, "one engine for the dialog's life"
    assert ("stylize", "b") in h.log and h.quiet()


def test_invalidate_stops_the_running_preview_without_a_result(h):
    h.worker.submit(job("a"))
    h.next("progress")
    h.worker.invalidate()
    assert h.clients[0].cancelled.wait(WAIT)
    assert h.quiet()


def test_engine_errors_arrive_as_text_and_a_dead_engine_is_replaced():
    h = Harness(fail_stylize=EngineFailed("engine_crashed", "The engine died.", "Try again."),
                block=False)
    try:
        gen = h.worker.submit(job("a"))
        kind, got, text = h.next("result", "error")
        assert (kind, got) == ("error", gen)
        assert "The engine died." in text and "Try again." in text
        assert h.clients[0].closed
        h.client_kwargs = {"block": False}
        gen = h.worker.submit(job("b"))
        assert h.next("result", "error")[:2] == ("result", gen)
        assert len(h.clients) == 2 and h.log.count("start") == 2
    finally:
        h.worker.close(timeout=WAIT)


def test_an_engine_that_cannot_start_is_reported_and_tried_again_next_time():
    h = Harness(fail_start=EngineFailed("engine_not_started", "No engine.", "Install it."))
    try:
        gen = h.worker.submit(job("a"))
        kind, got, text = h.next("result", "error")
        assert (kind, got) == ("error", gen) and "No engine." in text
        assert h.clients[0].closed
        h.worker.submit(job("b"))
        assert h.next("result", "error")[0] == "error"
        assert len(h.clients) == 2
    finally:
        h.worker.close(timeout=WAIT)


def test_a_dead_warm_engine_is_replaced_at_once_by_a_fresh_one():
    h = Harness(fail_stylize=EngineFailed("engine_crashed", "The engine died.", ""),
                block=False, warm=True)
    try:
        gen = h.worker.submit(job("a"))
        assert h.next("result", "error")[:2] == ("result", gen)
        assert [c.fresh for c in h.clients] == [False, True]
        assert h.clients[0].closed
    finally:
        h.worker.close(timeout=WAIT)


def test_a_dead_warm_engine_is_replaced_only_once_per_preview():
    h = Harness(fail_stylize=EngineFailed(Code.ENGINE_CRASHED, "The engine died.", ""),
                block=False, warm=True, fresh_fails_too=True)
    try:
        gen = h.worker.submit(job("a"))
        kind, got, text = h.next("result", "error")
        assert (kind, got) == ("error", gen) and "The engine died." in text
        assert [c.fresh for c in h.clients] == [False, True]
        assert all(c.closed for c in h.clients)
    finally:
        h.worker.close(timeout=WAIT)


def test_other_engine_errors_keep_the_engine():
    h = Harness(fail_stylize=EngineFailed("out_of_memory", "Out of memory.", "Smaller."),
                block=False)
    try:
        h.worker.submit(job("a"))
        assert "Out of memory." in h.next("result", "error")[2]
        h.worker.submit(job("b"))
        h.next("result", "error")
        assert len(h.clients) == 1 and not h.clients[0].closed
    finally:
        h.worker.close(timeout=WAIT)


def test_close_hands_over_the_started_engine_for_the_full_run(h):
    h.worker.submit(job("a"))
    h.next("progress")
    engine = h.worker.close(keep_engine=True, timeout=WAIT)
    assert engine is h.clients[0]
    assert h.clients[0].cancelled.is_set(), "the preview job was not cancelled"
    assert not engine.closed, "the handed-over engine must stay open"


def test_close_without_keeping_closes_the_engine(h):
    h.worker.submit(job("a"))
    h.next("progress")
    assert h.worker.close(keep_engine=False, timeout=WAIT) is None
    assert h.clients[0].closed


def test_close_before_any_preview_has_no_engine_to_hand_over(h):
    assert h.worker.close(keep_engine=True, timeout=WAIT) is None
    assert h.clients == []


def test_preview_overrides_cap_the_schedule_and_keep_the_users_settings():
    out = nst_preview.preview_overrides({"strength": 2.0, "seed": 5, "max_size": 2048})
    assert out == {"strength": 2.0, "seed": 5, "max_size": nst_preview.PREVIEW_SIZE,
                   "iterations": nst_preview.PREVIEW_ITERATIONS}
    small = nst_preview.preview_overrides({"max_size": 128, "iterations": 10})
    assert small["max_size"] == 128 and small["iterations"] == 10


def test_dump_writes_pixels_then_description(tmp_path):
    nst_preview.dump_preview(str(tmp_path), 1, 1, b"abcd", {"preset": "balanced"})
    nst_preview.dump_preview(str(tmp_path), 2, 1, b"12345678", {"preset": "quick"})
    assert (tmp_path / "preview-002.rgba").read_bytes() == b"12345678"
    meta = json.loads((tmp_path / "preview-002.json").read_text())
    assert meta == {"index": 2, "width": 2, "height": 1, "settings": {"preset": "quick"}}


# ------------------------------------------------------------------ the shared retry (bridge)
# The plug-in's full run and the preview worker both go through FreshRetry.run: one set of
# dead-engine codes, one retry.

def fake_clients(**kwargs):
    """``make_client`` for FreshRetry, and the clients it made, in order."""
    made = []

    def make(fresh):
        made.append(FakeClient(made_log, fresh=fresh, block=False, **kwargs))
        return made[-1]

    made_log: list = []
    return make, made


def stylize(client):
    return client.stylize(RGBAImage(1, 1, b"\1\2\3\4"), [], preset="p", overrides={},
                          device="cpu", on_progress=lambda p: None)


def test_the_dead_engine_codes_are_the_wire_codes_of_a_gone_engine():
    assert DEAD_ENGINE_CODES == {Code.ENGINE_CRASHED, Code.ENGINE_NOT_STARTED}
    # The job's own failures, and an engine of another version, are not cured by a new engine.
    assert not DEAD_ENGINE_CODES & {Code.CANCELLED, Code.PROTOCOL_VERSION, Code.BAD_REQUEST,
                                    "out_of_memory", "weights_missing"}


@pytest.mark.parametrize("code", sorted(DEAD_ENGINE_CODES))
@pytest.mark.parametrize("where", ["start", "stylize"])
def test_a_dead_warm_engine_is_replaced_by_a_fresh_one(code, where):
    failure = EngineFailed(code, "gone")
    make, made = fake_clients(warm=True, **{f"fail_{where}": failure})
    retrying = FreshRetry(make)
    out = retrying.run(stylize)
    assert out.data == b"\4\3\2\1"
    assert [c.fresh for c in made] == [False, True] and made[0].closed
    assert retrying.client is made[1] and not made[1].closed


def test_a_fresh_engine_that_fails_too_is_reported_after_one_retry():
    make, made = fake_clients(warm=True, fresh_fails_too=True,
                              fail_stylize=EngineFailed(Code.ENGINE_CRASHED, "gone"))
    retrying = FreshRetry(make)
    with pytest.raises(EngineFailed) as e:
        retrying.run(stylize)
    assert e.value.code == Code.ENGINE_CRASHED
    assert [c.fresh for c in made] == [False, True] and all(c.closed for c in made)
    assert retrying.client is None


def test_a_dead_per_run_engine_is_dropped_not_retried():
    make, made = fake_clients(fail_stylize=EngineFailed(Code.ENGINE_CRASHED, "gone"))
    retrying = FreshRetry(make)
    with pytest.raises(EngineFailed):
        retrying.run(stylize)
    assert len(made) == 1 and made[0].closed and retrying.client is None
    with pytest.raises(EngineFailed):
        retrying.run(stylize)  # the next run starts another, not a fresh-replacing one
    assert [c.fresh for c in made] == [False, False]


@pytest.mark.parametrize("code", [Code.PROTOCOL_VERSION, "out_of_memory", Code.CANCELLED])
def test_other_failures_keep_the_client_and_are_not_retried(code):
    make, made = fake_clients(warm=True, fail_stylize=EngineFailed(code, "no"))
    retrying = FreshRetry(make)
    for _ in range(2):
        with pytest.raises(EngineFailed):
            retrying.run(stylize)
    assert len(made) == 1 and not made[0].closed and retrying.client is made[0]
    retrying.close()
    assert made[0].closed and retrying.client is None


def test_a_handed_over_client_is_used_first_and_the_run_goes_on_where_it_stopped():
    """The full run's shape: the preview's started engine first; when it dies after the first
    layer, a fresh engine does the rest and the first layer is not redone."""
    make, made = fake_clients(warm=True)
    handed = FakeClient([], block=False, warm=True)
    done, starts = [], []

    def layers(client):
        for name in ["one", "two", "three"][len(done):]:
            if client is handed and done:
                raise EngineFailed(Code.ENGINE_CRASHED, "gone")
            done.append((name, client))

    retrying = FreshRetry(make, handed)
    retrying.run(layers, on_start=starts.append)
    assert done == [("one", handed), ("two", made[0]), ("three", made[0])]
    assert "start" not in handed.log and handed.closed
    assert starts == [True] and [c.fresh for c in made] == [True]
    assert retrying.take() is made[0] and retrying.client is None


class CancelReachesLate(FakeClient):
    """The dialog thread's cancel() stops the running job, then (as a busy machine may) only
    finishes once the worker could have moved on to the next request: a real client's cancel
    stops whatever job runs *at that moment*."""

    def __init__(self, log, **kw):
        super().__init__(log, **kw)
        self.started: dict = {}

    def stylize(self, content, styles, *, preset, overrides, device, on_progress):
        self.started.setdefault(preset, threading.Event())
        self.cancelled.clear()
        self.started[preset].set()
        return super().stylize(content, styles, preset=preset, overrides=overrides,
                               device=device, on_progress=on_progress)

    def cancel(self):
        self.log.append("cancel")
        self.cancelled.set()  # the stale job stops...
        self.started.setdefault("b", threading.Event()).wait(2.0)  # ...the worker may go on
        self.cancelled.set()  # and the cancel lands on whatever runs now


def test_the_newest_request_is_never_cancelled_in_place_of_the_stale_one():
    """Issue 23: a new Max size typed after a preview, and no preview came for minutes: the
    cancel meant for the stale job hit the new one, whose end as ``cancelled`` was silent."""
    log, clients, reports = [], [], queue.Queue()

    def make_client(fresh):
        clients.append(CancelReachesLate(log))
        return clients[-1]

    worker = nst_preview.PreviewWorker(FreshRetry(make_client),
                                       lambda kind, gen, payload: reports.put((kind, gen, payload)))
    try:
        worker.submit(job("a"))
        while reports.get(timeout=WAIT)[0] != "progress":
            pass
        second = worker.submit(job("b"))
        assert clients[0].started.get("b") and clients[0].started["b"].wait(WAIT)
        clients[0].release.set()
        while True:
            kind, gen, payload = reports.get(timeout=WAIT)
            if kind in ("result", "error"):
                break
        assert (kind, gen) == ("result", second), payload
        assert payload[0].data == bytes(reversed(job("b").content.data))
    finally:
        worker.close(timeout=WAIT)


def test_a_preview_cancelled_by_the_engine_is_reported_not_left_waiting():
    h = Harness(fail_stylize=EngineFailed(Code.CANCELLED, "Style transfer cancelled."),
                block=False)
    try:
        gen = h.worker.submit(job("a"))
        kind, got, text = h.next("result", "error")
        assert (kind, got) == ("error", gen) and "Press Preview" in text
    finally:
        h.worker.close(timeout=WAIT)
