"""viz.try_it: the default result is ordinary output (papermill, HTML); controls re-run on demand."""
from __future__ import annotations

import ipywidgets

from mmcourse import viz


def test_try_it_runs_once_with_defaults_then_waits_for_the_learner(monkeypatch):
    calls, shown = [], []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    viz.try_it(lambda tau, n, k: calls.append((tau, n, k)),
               tau=ipywidgets.FloatLogSlider(value=0.07, min=-2, max=0), n=[128, 256], k=(1, 9))
    assert calls == [(0.07, 128, 5)]  # once, with the defaults; manual mode: no second call
    bundle = shown[-1]._repr_mimebundle_()
    assert bundle["text/plain"].startswith("[try it yourself: controls for tau, n, k")
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live view is still there
    widget = shown[-1].box.children[1]
    assert isinstance(widget, ipywidgets.interactive)
    widget.kwargs_widgets[0].value = 0.5
    widget.update()  # what "re-run" does in a live kernel
    assert calls[-1] == (0.5, 128, 5)
