"""The Style Transfer dialog's preview: the region to repaint, stylised small and fast with the
dialog's current settings, while the dialog stays responsive.

Two parts, so the threading can be tested without GIMP or GTK:

- ``PreviewWorker`` (standard library only): one thread that owns one engine client, runs the
  newest preview request and drops stale ones. The engine's ``stylize`` blocks, so it must not
  run on GTK's thread; everything it reports goes through ``deliver`` (GLib.idle_add in GIMP),
  tagged with the request's generation so the dialog can ignore reports about old requests.
- ``PreviewPane`` (GTK 3, imported on use): the widgets beside the dialog's fields, the
  debounce on setting changes, and the Preview button.

GIMP calls (reading pixels) stay on GTK's thread: the plug-in builds each ``PreviewJob`` there
and hands the worker nothing but bytes. Nothing here touches the image.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time

from nst_core import STAGES, _, blend_by_coverage, crop_rgba

#: Longest side, px, of the preview's optimisation: also the size it is shown at.
PREVIEW_SIZE = 256
#: Optimiser steps of a preview (all pyramid levels together), as the quick preset.
PREVIEW_ITERATIONS = 30
#: A setting must stay unchanged this long before an automatic preview starts.
DEBOUNCE_MS = 700
#: Test hook: when set, every finished preview is also written to this folder as
#: ``preview-NNN.rgba`` (raw RGBA, the size shown) and ``preview-NNN.json`` (size, settings),
#: the JSON last, so a reader that sees it sees both. See docs/PLUGIN.md.
DUMP_ENV = "NST_PREVIEW_DUMP_DIR"


class PreviewJob:
    """What one preview needs, read on GTK's thread: pixels as bytes, no GIMP objects.

    ``content`` covers the region plus its context margin (as the full run does), at preview
    size; ``show`` is the region inside it, in the content's pixels; ``settings`` is what makes
    two previews differ (equal settings: no need to redo one); ``caption``: what the picture
    is, for the status line ("the region to repaint", an animation's first frame);
    ``coverage``: the selection's coverage of ``show`` (one byte a pixel, 0..255), or None
    when nothing is selected (all of it styled)."""

    def __init__(self, content, styles, preset, overrides, device, show, settings,
                 caption="the region to repaint", coverage=None):
        self.content = content      # RGBAImage
        self.styles = styles        # [(RGBAImage, weight)]
        self.preset = preset
        self.overrides = overrides  # StyleParams field -> value, preview schedule included
        self.device = device
        self.show = show            # (x, y, w, h) in content pixels
        self.settings = settings    # JSON-able dict
        self.caption = caption
        self.coverage = coverage    # bytes, show's w*h, or None


def preview_overrides(overrides):
    """The full run's overrides with the preview's short schedule on top: at most
    PREVIEW_SIZE px and PREVIEW_ITERATIONS steps (less when the user asked for less)."""
    out = dict(overrides)
    out["max_size"] = min(out.get("max_size") or PREVIEW_SIZE, PREVIEW_SIZE)
    out["iterations"] = min(out.get("iterations") or PREVIEW_ITERATIONS, PREVIEW_ITERATIONS)
    return out


def repeat_2x2(data, width, height):
    """An RGBA buffer repeated twice across and twice down (``2 * width`` px wide): the
    preview of a seamless result, so the user sees where its edges meet."""
    rows = [data[j * width * 4:(j + 1) * width * 4] * 2 for j in range(height)]
    return b"".join(rows) * 2


class PreviewWorker:
    """Runs preview requests on one thread with one engine client; the newest request wins.

    ``engine``: the bridge's ``retry.FreshRetry``, which starts the client on this thread,
    drops it when its engine dies (the next preview starts another) and replaces a dead warm
    engine at once, as the full run does. ``deliver(kind, generation, payload)`` is called on
    the worker's thread with kind ``starting`` (None), ``progress`` (the engine's progress
    header), ``result`` ((RGBAImage, the engine's notices)), ``error`` (text for the user).
    ``submit`` and ``invalidate`` cancel the job that is running; ``close`` ends the thread and
    either closes the engine or hands it over (to the full run, so it does not start a second
    engine).
    """

    def __init__(self, engine, deliver):
        self._engine = engine
        self._deliver = deliver
        self._cond = threading.Condition()
        self._latest = 0          # generation of the newest request (or invalidation)
        self._pending = None      # (generation, job) not yet started
        self._running = None      # generation of the job in the engine
        self._stop = False
        self._keep = False
        self._handoff = None
        self._thread = threading.Thread(target=self._loop, name="nst-preview", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ GTK's thread

    def submit(self, job):
        """Queue ``job`` in place of any older request; returns its generation."""
        with self._cond:
            self._latest += 1
            self._pending = (self._latest, job)
            self._cond.notify()
        self._cancel_stale()
        return self._latest

    def invalidate(self):
        """A setting changed: the running preview is out of date, stop it."""
        with self._cond:
            self._latest += 1
            self._pending = None
        self._cancel_stale()

    def close(self, *, keep_engine=False, timeout=None):
        """Stop previewing. With ``keep_engine`` the started engine client is returned (the
        caller owns it then), after waiting for a start in progress; otherwise it is closed
        and None returned. ``timeout``: seconds to wait for the thread (None = as long as a
        start or a cancel takes); past it the thread closes its client by itself."""
        with self._cond:
            self._stop, self._keep = True, keep_engine
            self._latest += 1
            self._pending = None
            self._cond.notify()
        self._cancel_stale()
        self._thread.join(timeout)
        with self._cond:
            if self._thread.is_alive():
                self._keep = False  # nobody will take it: the thread closes it when done
                return None
            handoff, self._handoff = self._handoff, None
            return handoff

    def _cancel_stale(self):
        # Decided and done under the lock: the client's cancel() stops whatever job it runs
        # *now*, so between the decision and the call the worker must not move on to the new
        # request (it needs the lock to). Otherwise the newest preview was cancelled in place
        # of the stale one and no preview came until the settings changed again.
        with self._cond:
            client = self._engine.client
            stale = self._running is not None and self._running != self._latest
            if client is not None and stale:
                client.cancel()  # thread-safe, quick; a no-op between jobs

    # ------------------------------------------------------------------ the worker's thread

    def _is_stale(self, generation):
        with self._cond:
            return generation != self._latest or self._stop

    def _loop(self):
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    generation, job = self._pending
                    self._pending = None
                    self._running = generation
                try:
                    self._run(generation, job)
                finally:
                    with self._cond:
                        self._running = None
        finally:
            self._finish()

    def _run(self, generation, job):
        def stylize(client):
            if self._is_stale(generation):
                return None

            def on_progress(p):
                if self._is_stale(generation):
                    client.cancel()  # closes the gap between submit and stylize
                else:
                    self._deliver("progress", generation, p)

            return client.stylize(job.content, job.styles, preset=job.preset,
                                  overrides=job.overrides, device=job.device,
                                  on_progress=on_progress)

        try:
            result = self._engine.run(
                stylize, on_start=lambda fresh: self._deliver("starting", generation, None))
        except Exception as e:  # noqa: BLE001 — every failure is shown in the dialog
            if getattr(e, "code", None) == "cancelled":
                if not self._is_stale(generation):  # not by us: never leave the pane waiting
                    self._deliver("error", generation, _("the engine stopped this preview "
                                                                "before it finished. Press "
                                                                "Preview to try again."))
                return
            text = e.user_text() if hasattr(e, "user_text") else f"{type(e).__name__}: {e}"
            self._deliver("error", generation, text)
            return
        if not self._is_stale(generation):
            notices = [str(n) for n in getattr(self._engine.client, "last_notices", None) or []]
            self._deliver("result", generation, (result, notices))

    def _finish(self):
        with self._cond:
            if self._keep:
                self._handoff = self._engine.take()
                return
        self._engine.close()


def dump_preview(folder, width, height, data, settings, **facts):
    """The test hook (DUMP_ENV): one finished preview as raw RGBA plus its JSON description,
    numbered on from the previews already there (an earlier dialog's too)."""
    os.makedirs(folder, exist_ok=True)
    index = 1 + sum(1 for n in os.listdir(folder) if n.endswith(".json"))
    base = os.path.join(folder, f"preview-{index:03d}")
    with open(base + ".rgba", "wb") as f:
        f.write(data)
    with open(base + ".json.tmp", "w", encoding="utf-8") as f:
        json.dump({"index": index, "width": width, "height": height, "settings": settings,
                   **facts}, f)
    os.replace(base + ".json.tmp", base + ".json")


class PreviewPane:
    """The preview beside the dialog's fields: a picture, a progress bar, a status line, a
    Preview button and an "update automatically" switch.

    ``build_job()`` (GTK's thread) returns a PreviewJob, or raises an exception whose text the
    user can act on (no style layer, a selection off the layer…). ``engine``: the worker's
    (``PreviewWorker``). ``watched``: the config properties whose change makes the shown
    preview out of date.
    """

    def __init__(self, dialog, config, build_job, engine, watched):
        import gi
        gi.require_version("Gtk", "3.0")
        gi.require_version("GdkPixbuf", "2.0")
        from gi.repository import GdkPixbuf, GLib, Gtk

        self._Gtk, self._GLib, self._GdkPixbuf = Gtk, GLib, GdkPixbuf
        self._build_job = build_job
        self._watched = frozenset(watched)
        self._generation = None   # the request whose reports are shown
        self._job = None          # the PreviewJob of that request
        self._shown = None        # settings of the preview on screen
        self._timer = None
        self._closed = False
        self._dump_dir = os.environ.get(DUMP_ENV) or None
        self._worker = PreviewWorker(engine, self._from_worker)
        self.widget = self._build_widgets()
        self._pack_beside_fields(dialog)
        self._config = config
        self._values = {name: self._value(name) for name in self._watched}
        self._notify_id = config.connect("notify", self._on_setting_changed)
        self._schedule()  # the first preview starts once the dialog is up
        if self._dump_dir:
            # Test hook: how long GTK's main loop went without running (the dialog frozen).
            self._tick_at, self._longest_stall = time.monotonic(), 0.0
            GLib.timeout_add(50, self._tick)

    def _tick(self):
        now = time.monotonic()
        self._longest_stall = max(self._longest_stall, now - self._tick_at)
        self._tick_at = now
        return not self._closed

    # ------------------------------------------------------------------ widgets

    def _build_widgets(self):
        Gtk = self._Gtk
        pane = Gtk.Frame(label=_("Preview"))
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6, margin=8)
        pane.add(box)
        self._image = Gtk.Image()
        self._image.set_size_request(PREVIEW_SIZE, PREVIEW_SIZE)
        box.pack_start(self._image, False, False, 0)
        self._progress = Gtk.ProgressBar(show_text=True)
        self._progress.set_no_show_all(True)
        box.pack_start(self._progress, False, False, 0)
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self._spinner = Gtk.Spinner()
        row.pack_start(self._spinner, False, False, 0)
        self._status = Gtk.Label(xalign=0.0, wrap=True, selectable=False)
        self._status.set_max_width_chars(34)
        row.pack_start(self._status, True, True, 0)
        box.pack_start(row, False, False, 0)
        self._notice = Gtk.Label(xalign=0.0, wrap=True)
        self._notice.set_max_width_chars(34)
        self._notice.set_no_show_all(True)
        box.pack_start(self._notice, False, False, 0)
        buttons = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self._button = Gtk.Button.new_with_mnemonic(_("Pre_view"))
        self._button.set_tooltip_text(_("Stylise the region to repaint, small and fast, with "
                                        "the settings on the left"))
        self._button.connect("clicked", lambda _b: self._guarded(self.update, force=True))
        buttons.pack_start(self._button, False, False, 0)
        self._auto = Gtk.CheckButton.new_with_mnemonic(_("Update _automatically"))
        self._auto.set_active(True)
        self._auto.set_tooltip_text(_("A new preview shortly after a setting stops changing"))
        self._auto.connect("toggled", lambda b: b.get_active() and self._schedule())
        buttons.pack_start(self._auto, False, False, 0)
        box.pack_start(buttons, False, False, 0)
        note = Gtk.Label(xalign=0.0, wrap=True)
        note.set_max_width_chars(34)
        note.set_markup("<small>{}</small>".format(html.escape(
            _("{size} px, {steps} steps: a rough idea of the result. Nothing changes in the "
              "image until OK.").format(size=PREVIEW_SIZE, steps=PREVIEW_ITERATIONS))))
        box.pack_start(note, False, False, 0)
        return pane

    def _pack_beside_fields(self, dialog):
        """Move the fields ProcedureDialog.fill() put in the content area into a row, with the
        preview on their right (a column would not fit small screens)."""
        Gtk = self._Gtk
        content = dialog.get_content_area()
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        fields = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
        for child in content.get_children():
            content.remove(child)
            fields.pack_start(child, True, True, 0)
        row.pack_start(fields, True, True, 0)
        row.pack_start(self.widget, False, False, 0)
        content.pack_start(row, True, True, 0)
        row.show_all()

    def _say(self, text, *, busy=False):
        self._status.set_text(text)
        if busy:
            self._spinner.start()
        else:
            self._spinner.stop()
            self._progress.hide()

    # ------------------------------------------------------------------ settings

    def _value(self, name):
        """A setting's value, comparable (layers by id)."""
        value = self._config.get_property(name)
        get_id = getattr(value, "get_id", None)
        return ("item", get_id()) if get_id is not None else value

    def _on_setting_changed(self, _config, pspec):
        if self._closed or pspec.name not in self._watched:
            return
        # GIMP's fields also notify when a value is committed unchanged (Tab out of a spin
        # button): that must not cancel a preview of these very settings.
        value = self._value(pspec.name)
        if self._values.get(pspec.name) == value:
            return
        self._values[pspec.name] = value
        self._worker.invalidate()  # a preview in progress is out of date now
        self._generation = None
        if self._shown is not None:
            self._say(_("Settings changed: the preview shows the earlier ones."))
        else:
            self._say("")
        self._schedule()

    def _schedule(self):
        """(Re)start the debounce timer; the automatic preview runs when it fires."""
        if self._timer is not None:
            self._GLib.source_remove(self._timer)
            self._timer = None
        if self._auto.get_active():
            self._timer = self._GLib.timeout_add(DEBOUNCE_MS, self._on_timer)

    def _on_timer(self):
        self._timer = None
        if not self._closed:
            self._guarded(self.update, force=False)
        return False

    def _guarded(self, fn, *args, **kwargs):
        """A GLib callback's work: an exception would vanish into GLib's log and leave the pane
        saying "Previewing…" for ever; the user sees it instead."""
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 — shown in the dialog
            self._generation = None
            try:
                self._say(_("No preview: {reason}").format(reason=f"{type(e).__name__}: {e}"))
            except Exception:  # noqa: BLE001 — the widgets are gone
                pass

    def update(self, *, force):
        """Start a preview of the current settings (``force``: even if they are the ones
        shown, e.g. after painting on a layer)."""
        if self._closed:
            return
        try:
            job = self._build_job(force)
        except Exception as e:  # noqa: BLE001 — a message for the user, in the dialog
            self._worker.invalidate()
            self._generation = None
            self._say(str(e))
            return
        if not force and job.settings == self._shown:
            self._say(_("The preview shows these settings."))
            return
        self._job = job
        self._submitted_at = time.monotonic()
        self._generation = self._worker.submit(job)
        self._progress.set_fraction(0.0)
        self._progress.set_text(_("Sending the image"))
        self._progress.show()
        self._say(_("Previewing…"), busy=True)

    # ------------------------------------------------------------------ worker reports

    def _from_worker(self, kind, generation, payload):
        """Worker thread: hand the report to GTK's thread."""
        self._GLib.idle_add(self._on_report, kind, generation, payload)

    def _on_report(self, kind, generation, payload):
        if self._closed or generation != self._generation:
            return False  # about an older request, or the dialog is gone
        self._guarded(self._report, kind, payload)
        return False

    def _report(self, kind, payload):
        if kind == "starting":
            self._say(_("Starting the engine (the first start takes a while)…"), busy=True)
        elif kind == "progress":
            total = payload.get("total") or 0
            done = payload.get("iteration") or 0
            self._progress.set_fraction(min(1.0, done / total) if total else 0.0)
            stage = payload.get("stage")
            stage = _(STAGES[stage]) if stage in STAGES else str(stage or "").capitalize()
            self._progress.set_text(f"{stage} {done}/{total}" if total else stage)
            self._say(_("Previewing…"), busy=True)
        elif kind == "result":
            self._show(payload)
        elif kind == "error":
            self._say(_("No preview: {reason}").format(reason=payload))

    def _show(self, payload):
        result, notices = payload
        job = self._job
        x, y, w, h = job.show
        data = crop_rgba(result.data, result.width, (x, y, w, h))
        if job.coverage is not None:
            # The run masks its new layer with the selection: the bounding box's corners
            # outside an ellipse stay the source's, feathered edges are partly styled.
            source = crop_rgba(job.content.data, job.content.width, job.show)
            data = blend_by_coverage(source, data, job.coverage)
        GdkPixbuf = self._GdkPixbuf
        pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(self._GLib.Bytes.new(data),
                                                 GdkPixbuf.Colorspace.RGB, True, 8, w, h, w * 4)
        # Seamless: 2x2 repeats in the same space, so the user sees where the edges meet. The
        # run's tile is the selection's bounding box and its layer is masked by the selection
        # like any other, so the repeated tile is the blended one: what tiling the result gives
        # (source corners included), not a seamless tile the image will never hold.
        if job.overrides.get("seamless"):
            pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(
                self._GLib.Bytes.new(repeat_2x2(data, w, h)), GdkPixbuf.Colorspace.RGB, True,
                8, 2 * w, 2 * h, 8 * w).scale_simple(w, h, GdkPixbuf.InterpType.BILINEAR)
        # Transparent parts over a checkerboard, as GIMP shows them.
        flat = pixbuf.composite_color_simple(w, h, GdkPixbuf.InterpType.NEAREST, 255, 8,
                                             0x999999, 0x666666)
        self._image.set_from_pixbuf(flat or pixbuf)
        self._shown = job.settings
        self._say(_("Preview of {what} ({w}×{h} px).").format(what=job.caption, w=w, h=h))
        # E.g. weights that are not the verified VGG19: the preview must not pass for the real
        # thing. The full notice is the tooltip (and a message after the full run).
        if notices:
            text = (_("The engine's weights are not the verified VGG19: this is not what "
                      "real style transfer looks like.") if any("VGG19" in n for n in notices)
                    else notices[0])
            self._notice.set_markup("<small><b>{}</b> {}</small>".format(
                html.escape(_("Note:")), html.escape(text)))
            self._notice.set_tooltip_text("\n".join(notices))
            self._notice.show()
        else:
            self._notice.hide()
        if self._dump_dir:
            dump_preview(self._dump_dir, w, h, data, job.settings,
                         seconds=round(time.monotonic() - self._submitted_at, 2),
                         longest_main_loop_stall_s=round(self._longest_stall, 3))

    # ------------------------------------------------------------------ the end

    def close(self, *, keep_engine):
        """The dialog was answered: stop previewing. Returns the engine client to reuse for
        the full run (``keep_engine``, OK) or None (Cancel: the engine is closed)."""
        self._closed = True
        if self._timer is not None:
            self._GLib.source_remove(self._timer)
            self._timer = None
        try:
            self._config.disconnect(self._notify_id)
        except Exception:  # noqa: BLE001
            pass
        # Cancel: don't keep the user waiting for the engine to wind down; it exits with the
        # plug-in anyway (its stdin closes).
        return self._worker.close(keep_engine=keep_engine, timeout=None if keep_engine else 5)
