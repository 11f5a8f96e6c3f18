"""Small display helpers for notebooks: "try it yourself" controls (notebooks 01, 03, 04).

A notebook is read in two ways: live in JupyterLab, and as an executed copy in ``build/`` (papermill,
CI, the HTML pages). :func:`try_it` serves both: it always shows the result for the default
settings as ordinary cell output, and adds sliders that re-run the computation when a live kernel
is behind them.
"""
from __future__ import annotations

from typing import Any, Callable


def _default(control: Any) -> Any:
    """The starting value of an ``ipywidgets.interactive`` abbreviation or widget."""
    if hasattr(control, "value"):
        return control.value
    if isinstance(control, tuple):  # (min, max) or (min, max, step): the middle, as interact does
        lo, hi = control[0], control[1]
        mid = (lo + hi) / 2
        return type(lo)(mid) if isinstance(lo, int) and isinstance(hi, int) else mid
    if isinstance(control, (list, dict)):
        return control[0] if isinstance(control, list) else next(iter(control.values()))
    return control


def try_it(fn: Callable[..., Any], **controls: Any) -> None:
    """Run ``fn`` once with the default value of every control, then show controls that re-run it.

    ``controls`` use ipywidgets' abbreviations (``tau=(0.01, 1.0, 0.01)``, ``window=[128, 256, 512]``)
    or widgets (``ipywidgets.FloatLogSlider(value=0.07, ...)``). The first result is ordinary
    output, so it appears in papermill runs and HTML pages too; the controls need a live kernel
    (JupyterLab) and re-run ``fn`` when you press "re-run".
    """
    fn(**{name: _default(c) for name, c in controls.items()})
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:  # plain Python: the static result is all there is
        return
    widget = ipywidgets.interactive(fn, {"manual": True, "manual_name": "re-run"}, **controls)
    note = ipywidgets.HTML("<i>Try it yourself: change the values and press <b>re-run</b> "
                           "(needs a live kernel, e.g. JupyterLab).</i>")
    display(_Controls(ipywidgets.VBox([note, widget]), list(controls)))


class _Controls:
    """The controls' widget view, with a readable text form for executed copies (papermill, HTML),
    where no kernel is behind them: one line instead of the widget's repr."""

    def __init__(self, box, names: list[str]):
        self.box, self.names = box, names

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = (f"[try it yourself: controls for {', '.join(self.names)} - open this notebook "
                                "in JupyterLab to use them]")
        return bundle


def show_source(*objects: Any) -> None:
    """Show the source code of library functions or classes in the notebook, as the learner would read
    it in a cell (notebooks whose code also runs as a command keep it in the library: notebook 07)."""
    import inspect

    from IPython.display import Markdown, display

    for obj in objects:
        where = f"{obj.__module__}.{obj.__qualname__}"
        display(Markdown(f"`{where}`:\n\n```python\n{inspect.getsource(obj).rstrip()}\n```"))
