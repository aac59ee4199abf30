"""ipywidgets for the workbook: progress, the flag switch, the live chart.

Each widget class keeps its ipywidgets tree in `.widget` and displays as that tree, so a notebook
cell can end with the object itself. ipywidgets is imported when a widget is made and plotly's
FigureWidget (about 1.3 s to import) only when a live chart is drawn: `import labkit.widgets` is
cheap, and `progress()` prints plain lines in a terminal without any of them.

Nothing here blocks a headless run for ever: the background threads are daemons and bounded
(each lab step has its own timeout; the live chart stops itself after `max_duration`).
"""
from __future__ import annotations

import html
import os
import re
import threading
import time
from typing import Any

from labkit.errors import LabError
from labkit.progress import printer
from labkit.settings import FLAG, SERVICE

_RED = "#b00020"
_GREEN = "#1b5e20"


# --- progress ----------------------------------------------------------------------------------
def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets have a frontend to talk to)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _show(obj) -> None:
    """Display obj in a notebook; a no-op elsewhere (tests, scripts)."""
    if _in_kernel():
        from IPython.display import display

        display(obj)


class _Displayable:
    """Displays as its `.widget` in a notebook; its text (where widgets do not render: a saved
    notebook on GitHub, nbconvert's HTML, a terminal) is the widget's own one line, not the tree."""

    widget: Any

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        return {**bundle, "text/plain": repr(self)}


class ProgressView(_Displayable):
    """A progress bar and a one-line message; `.callback` is a labkit `progress` argument.

        view = ProgressView(); display(view)
        lab.wait_for_error_logs(progress=view.callback)
    """

    def __init__(self, title: str = ""):
        import ipywidgets as w

        self.title = title
        self.message = ""
        self.fraction: float | None = None
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info")
        self.label = w.HTML(value="")
        self.bar.add_class("labkit-progress-bar")
        self.label.add_class("labkit-progress-message")
        self.widget = w.HBox([self.bar, self.label])
        self.widget.add_class("labkit-progress")

    def __repr__(self) -> str:
        return f"<progress {self.title or ''}: {self.message or 'waiting'}>".replace("  ", " ")

    def callback(self, message: str, fraction: float | None = None) -> None:
        """Report a step: message shown next to the bar; fraction 0..1 moves it (None keeps it)."""
        self.message = message
        if fraction is not None:
            self.fraction = min(max(float(fraction), 0.0), 1.0)
            self.bar.value = self.fraction
        self.bar.bar_style = "success" if self.fraction is not None and self.fraction >= 1.0 else "info"
        self.label.value = self._title() + html.escape(message)

    __call__ = callback

    def _title(self) -> str:
        return f"<b>{html.escape(self.title)}</b>: " if self.title else ""

    def done(self, message: str = "done") -> None:
        self.message, self.fraction = message, 1.0
        self.bar.value = 1.0
        self.bar.bar_style = "success"
        self.label.value = f'{self._title()}<span style="color:{_GREEN}">✔ {html.escape(message)}</span>'

    def fail(self, message: str) -> None:
        self.message = message
        self.bar.bar_style = "danger"
        self.label.value = f'{self._title()}<span style="color:{_RED}">✘ {html.escape(message)}</span>'


def progress(title: str = ""):
    """A `progress` argument for any labkit wait: a ProgressView shown in a notebook, plain lines
    on stderr elsewhere.

        lab.wait_for_problem(timeout=600, progress=widgets.progress("Waiting for the problem"))
    """
    if _in_kernel():
        view = ProgressView(title)
        _show(view)
        return view
    return printer(title=f"{title}: " if title else "")


def _error_text(exc: BaseException) -> str:
    """A LabError's own message; anything else named by its type (no traceback in the widget)."""
    return str(exc) if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"


# --- the flag switch ------------------------------------------------------------------------------
class FlagSwitch(_Displayable):
    """The live variants of a flag as toggle buttons, what flagd serves now, and an Apply button.

    Apply runs lab.change_flag (event → ConfigMap → restart → every pod serves it) in a background
    thread with a progress display; the button is disabled while it runs; errors appear in red in the
    widget. The restart way is a choice beside it: rollout (flagd never down) or the lab page's scale.
    `apply(variant)` does the same from code (synchronously by default) and returns the Served result
    (None on failure, with the error kept in `.error`).
    """

    def __init__(self, lab, flag: str = FLAG, service: str = SERVICE, send_event: bool = True,
                 restart: str | None = None):
        import ipywidgets as w

        from labkit.lab import DEFAULT_RESTART, RESTARTS

        self.lab, self.flag, self.service = lab, flag, service
        self.send_event = send_event
        self.error: BaseException | None = None
        self.result = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = False

        badge = " <small>(local lab)</small>" if getattr(lab, "local", False) else ""
        self.title = w.HTML(f"<b>{html.escape(flag)}</b> on <b>{html.escape(service)}</b>{badge}")
        self.toggle = w.ToggleButtons(options=[], description="variant:",
                                      tooltips=[], style={"button_width": "auto"})
        self.toggle.add_class("labkit-variants")
        self.served_label = w.HTML("flagd serves: …")
        self.served_label.add_class("labkit-served")
        self.cart_label = w.HTML("")  # what the demo's cart reads, asked as it asks (typed, port 8013)
        self.cart_label.add_class("labkit-cart")
        self.apply_button = w.Button(description="Apply", button_style="primary", icon="check",
                                     tooltip=f"send the change event, change {flag}, restart flagd, "
                                             "check what flagd serves")
        self.apply_button.add_class("labkit-apply")
        self.restart = w.ToggleButtons(
            options=list(RESTARTS), value=restart or DEFAULT_RESTART, description="restart:",
            tooltips=["new pods start beside the old ones: flagd never stops answering",
                      "the lab page's kubectl scale to 0 and back: flagd is down in between"],
            style={"button_width": "auto"})
        self.restart.add_class("labkit-restart")
        self.apply_button.on_click(lambda _button: self.apply(wait=False))
        self.progress = ProgressView()
        self.status = w.HTML("")
        self.status.add_class("labkit-status")
        self.widget = w.VBox([self.title, self.toggle, self.served_label, self.cart_label,
                              w.HBox([self.apply_button, self.restart]), self.progress.widget, self.status])
        self.widget.add_class("labkit-flag-switch")

        try:
            self.toggle.options = list(lab.variants(flag))
        except Exception as exc:  # shown in the widget, not as a traceback
            self._show_error(exc)
            self.apply_button.disabled = True
        self._follow(self.refresh())
        lab.on_change(self._changed_elsewhere)  # e.g. lab.roll_back() in a later cell

    def __repr__(self) -> str:
        served = html.unescape(re.sub(r"<[^>]+>", "", self.served_label.value))
        return f"<flag switch for {self.flag} on {self.service}: {served} (a widget: run the cell to use it)>"

    def _follow(self, served) -> None:
        variant = getattr(served, "variant", None)
        if variant in self.toggle.options:
            self.toggle.value = variant

    def _changed_elsewhere(self, flag: str, served) -> None:
        if flag == self.flag and not self.running:
            self._follow(self.refresh())

    # -- state shown ---
    @property
    def running(self) -> bool:
        """True while a change is being applied (button or apply())."""
        return self._busy

    def refresh(self):
        """Ask flagd what it serves now and show it; returns the Served result (or None)."""
        try:
            served = self.lab.served(self.flag)
        except Exception as exc:
            self.served_label.value = (f'flagd serves: <span style="color:{_RED}">unknown</span> '
                                       f"<small>({html.escape(_error_text(exc))})</small>")
            return None
        if getattr(served, "reason", None) == "DISABLED":
            self.served_label.value = "flagd serves: <b>nothing</b> <small>(the flag is disabled)</small>"
            return served
        if served is None or getattr(served, "variant", None) is None:
            self.served_label.value = "flagd serves: <b>nothing</b> <small>(no flagd pod is ready)</small>"
            return served
        self.served_label.value = f"flagd serves: <b>{html.escape(str(served.variant))}</b>"
        if getattr(served, "by_targeting", False):  # the default is not what everyone gets
            self.served_label.value += (" <small>(to a request with no context; this flag has targeting: "
                                        "other contexts may get another variant)</small>")
        self._show_cart(getattr(served, "cart", None))
        return served

    def _show_cart(self, read) -> None:
        """The cart's read under flagd's answer: red when the cart falls back to its default."""
        unknown_or_fallback = read.falls_back if hasattr(read, "falls_back") else True  # a str: unknown
        color = f' style="color:{_RED}"' if unknown_or_fallback else ""
        self.cart_label.value = "" if read is None else f"<span{color}>{html.escape(str(read))}</span>"

    @property
    def cart_text(self) -> str:
        """What the cart reads, as shown (e.g. 'the cart reads cartFailure = 0.1 (10%), so ...')."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.cart_label.value))

    @property
    def served_text(self) -> str:
        """The served label as plain text, e.g. 'flagd serves: on'."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.served_label.value))

    def _show_error(self, exc: BaseException) -> None:
        self.error = exc
        self.status.value = f'<span style="color:{_RED}">✘ {html.escape(_error_text(exc))}</span>'

    def _set_busy(self, busy: bool) -> None:
        self.apply_button.disabled = busy
        self.toggle.disabled = busy
        self.restart.disabled = busy
        self.apply_button.description = "Applying…" if busy else "Apply"

    # -- the change ---
    def apply(self, variant: str | None = None, wait: bool = True):
        """Change the flag to `variant` (default: the selected one) the whole way to flagd.

        wait=True runs here and returns the Served result (None on failure; see `.error`);
        wait=False starts a background thread and returns None at once (`.wait()` joins it).
        """
        with self._lock:
            if self.running:
                self.status.value = "already applying a change; wait for it to finish"
                return None
            variant = variant if variant is not None else self.toggle.value
            if variant is not None and variant in self.toggle.options and variant != self.toggle.value:
                self.toggle.value = variant
            self._busy = True
            self.error, self.result = None, None
            self.status.value = ""
            self._set_busy(True)
            self.progress.callback(f"changing {self.flag} to {variant}", 0.0)
            if wait:
                self._thread = None
            else:
                self._thread = threading.Thread(target=self._run, args=(variant,), daemon=True,
                                                name=f"labkit-apply-{self.flag}")
                self._thread.start()
                return None
        return self._run(variant)

    def _run(self, variant):
        try:
            if variant is None:
                raise LabError(f"No variant of {self.flag!r} is selected; choose one and press Apply.")
            served = self.lab.change_flag(variant, self.flag, self.service, progress=self.progress.callback,
                                          send_event=self.send_event, restart=self.restart.value)
            self.result = served
            got = getattr(served, "variant", variant)
            if getattr(served, "already", False):  # made before: no event, no edit, no restart
                said = f"{self.flag} is already {got}, nothing sent"
                self.progress.done(said)
                self.status.value = f'<span style="color:{_GREEN}">✔ {html.escape(said)}</span>'
                return served
            self.progress.done(f"flagd serves {self.flag} = {got}")
            read = getattr(served, "cart", None)
            if getattr(read, "falls_back", False):  # every pod serves it, yet the cart cannot read it
                self.status.value = (f'<span style="color:{_RED}">✘ {html.escape(self.flag)} is now '
                                     f"<b>{html.escape(str(got))}</b> and flagd serves it, but "
                                     f"{html.escape(str(read))}</span>")
                return served
            self.status.value = (f'<span style="color:{_GREEN}">✔ {html.escape(self.flag)} is now '
                                 f"<b>{html.escape(str(got))}</b>, and flagd serves it"
                                 + (f"; {html.escape(str(read))}" if read is not None else "") + "</span>")
            return served
        except KeyboardInterrupt:  # Ctrl-C / the stop button mid-change: say where things are
            self.progress.fail("interrupted")
            said = self._after_interrupt(variant)
            self._show_error(LabError(said))
            if self._thread is None:  # a cell's own call: it stops, with a sentence, not a traceback
                raise LabError(said) from None
            return None
        except Exception as exc:
            self.progress.fail("the change did not complete")
            self._show_error(exc)
            return None
        finally:
            try:
                if self.progress.message != "interrupted":  # just re-read after an interrupt
                    self.refresh()
            finally:
                self._set_busy(False)
                self._busy = False

    def _after_interrupt(self, variant) -> str:
        """Re-read what flagd serves once it answers again (a restart cut short may still be starting
        pods) and say it as a sentence."""
        served = self._reread()
        now = getattr(served, "variant", None)
        where = (f"flagd serves {self.flag} = {now} now" if now is not None else
                 "no flagd pod answers yet (a restart was under way); the label above updates when one does")
        return (f"Interrupted while changing {self.flag} to {variant}: {where}. Press Apply (or run the "
                "cell again) to finish the change: it picks up where this one stopped.")

    def _reread(self, timeout: float = 15.0):
        """refresh() until flagd names a variant or `timeout` s pass (a second interrupt stops it)."""
        deadline = time.monotonic() + timeout
        served = self.refresh()
        try:
            while getattr(served, "variant", None) is None and time.monotonic() < deadline:
                time.sleep(0.25)
                served = self.refresh()
        except KeyboardInterrupt:
            pass
        return served

    def wait(self, timeout: float | None = None):
        """Wait for a change started by the button (or apply(wait=False)); returns the result."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.result


# --- the live chart ---------------------------------------------------------------------------------
def static_charts() -> bool:
    """True where a FigureWidget cannot render: LABKIT_STATIC_CHARTS=1, no anywidget, or no kernel."""
    import importlib.util

    if os.environ.get("LABKIT_STATIC_CHARTS", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if importlib.util.find_spec("anywidget") is None:
        return True
    return not _in_kernel()


class LiveChart(_Displayable):
    """The failures chart, refreshed every `every` seconds in a background thread, with a Stop
    button that turns into Start (a stopped chart goes on where it was).

    Where widgets cannot render (see `static_charts()`, or static=True) it is drawn once as a static
    figure instead. The refresh thread is a daemon and stops itself after `max_duration` seconds.
    Errors while refreshing are shown under the chart; the last good figure stays. The widget takes
    the notebook's full width, as the static chart does.
    """

    def __init__(self, lab, service: str = SERVICE, every: float = 5.0, since=None,
                 max_duration: float = 15 * 60, static: bool | None = None, start: bool = True):
        self.lab, self.service, self.every, self.since = lab, service, max(float(every), 0.5), since
        self.max_duration = max_duration
        self.static = static_charts() if static is None else static
        self.error: BaseException | None = None
        self.updates = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

        figure = self._build()
        if self.static:
            self.figure = figure
            self.widget = None
            return
        import ipywidgets as w

        # Drawn by the notebook's own plotly renderer inside an Output widget, as the static chart
        # is: as wide as the cell (a FigureWidget is drawn before it is attached, so at 700 px).
        self.figure = figure
        self.output = w.Output(layout=w.Layout(width="100%"))
        self.output.add_class("labkit-live-figure")
        self._draw(figure)
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning",
                                    tooltip="stop refreshing this chart")
        self.stop_button.add_class("labkit-stop")
        self.stop_button.on_click(lambda _b: self.stop() if self.running else self.start())
        self.status = w.HTML("")
        self.status.add_class("labkit-status")
        self.widget = w.VBox([self.output, w.HBox([self.stop_button, self.status])],
                             layout=w.Layout(width="100%"))
        self.widget.add_class("labkit-live-chart")
        self._show_status()
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"<live chart of {self.service}'s failed requests, {self.updates} refreshes>"

    # -- data ---
    def _build(self):
        """A fresh go.Figure from the lab; a part that fails is left out and kept in .error."""
        errors: list[BaseException] = []
        figure = self.lab.chart(self.service, self.since, errors=errors)
        self.error = errors[0] if errors else None
        return figure

    def refresh(self) -> None:
        """Fetch the data once more and redraw (called by the thread; fine to call directly)."""
        with self._lock:
            try:
                fresh = self._build()
            except Exception as exc:
                self.error = exc
                fresh = None
            if fresh is not None:
                self.figure = fresh
                if not self.static:
                    self._draw(fresh)
                self.updates += 1
            self._show_status()

    def _draw(self, figure) -> None:
        """Show `figure` in the widget: one output replaced in one message, so nothing flickers."""
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": _plotly_bundle(figure)},)

    def _show_status(self, note: str = "") -> None:
        if self.static:
            return
        running = self.running
        self.stop_button.description, self.stop_button.icon = ("Stop", "stop") if running else ("Start", "play")
        self.stop_button.tooltip = "stop refreshing this chart" if running else "refresh this chart again"
        if self.error is not None:
            self.status.value = (f'<span style="color:{_RED}">✘ {html.escape(_error_text(self.error))}'
                                 "</span>")
            return
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        state = note or (f"live, every {self.every:g} s" if running else "not refreshing")
        self.status.value = f"<small>{html.escape(state)}; updated {stamp} UTC</small>"

    # -- the thread ---
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Refresh (again) every `every` seconds, also after Stop or after max_duration ran out."""
        if self.static or self.running:
            return
        self._stop = stop = threading.Event()  # each run its own: an old loop never sees a new start
        self._thread = threading.Thread(target=self._loop, args=(stop,), daemon=True,
                                        name="labkit-live-chart")
        self._thread.start()
        self._show_status()

    def _loop(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.max_duration
        note = "stopped; Start refreshes again"
        while not stop.wait(self.every):
            if time.monotonic() >= deadline:
                note = f"stopped after {self.max_duration / 60:g} min; Start refreshes again"
                break
            self.refresh()
        if self._thread is threading.current_thread():
            self._thread = None
        try:
            self._show_status(note)
        except Exception:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop refreshing (the chart stays as it is; start() or the Start button goes on)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _repr_mimebundle_(self, include=None, exclude=None):
        if self.static:
            return _figure_bundle(self.figure, include, exclude)
        return super()._repr_mimebundle_(include=include, exclude=exclude)


def _plotly_bundle(figure) -> dict:
    """The figure as JSON in plotly's mimetype (what JupyterLab's and VS Code's renderers draw,
    responsive to the cell's width), with a line of text for everything else."""
    import json

    meta = (figure.layout.meta or {}).get("labkit", {}) if figure.layout.meta else {}
    return {"application/vnd.plotly.v1+json": {**json.loads(figure.to_json()), "config": {"responsive": True}},
            "text/plain": f"<{figure.layout.title.text or 'chart'}: {meta.get('slots', 0)} slots, "
                          f"{meta.get('change_markers', 0)} change markers>"}


def _figure_bundle(figure, include=None, exclude=None) -> dict:
    """The figure as plotly's renderers show it; the plotly mimetype where no renderer applies."""
    import json

    bundle = figure._repr_mimebundle_(include=include, exclude=exclude) or {}
    if not bundle:
        bundle = {"application/vnd.plotly.v1+json": {**json.loads(figure.to_json()), "config": {}}}
    meta = (figure.layout.meta or {}).get("labkit", {}) if figure.layout.meta else {}
    title = figure.layout.title.text or "chart"
    bundle.setdefault("text/plain", f"<{title}: {meta.get('slots', 0)} slots, "
                                    f"{meta.get('change_markers', 0)} change markers>")
    return bundle
