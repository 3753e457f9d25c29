"""What a search shows while it runs: one line of text (`progress_text`), drawn by the caller's choice.

The search calls `progress(search.Progress)` after every trial and never prints. The CLI draws the text on its
terminal line; `ProgressBar` draws it as a live bar (tqdm: a widget in Jupyter with ipywidgets, text elsewhere).
"""

from __future__ import annotations

from typing import Any, Callable


def progress_text(p: Any, metric: str) -> str:
    """`trials 12/50 | best accuracy 0.9667 | 8.1 s elapsed | ETA 25 s`"""
    total = f"/{p.n_total}" if p.n_total else ""
    best = f"{p.best_value:.4g}" if p.best_value is not None else "-"
    eta = f" | ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
    return f"trials {p.n_done}{total} | best {metric} {best} | {p.elapsed_s:.1f} s elapsed{eta}"


class ProgressBar:
    """A live bar of finished trials with the best value so far. Opened at the first trial, so a search with
    nothing to run draws nothing; `close()` ends it."""

    def __init__(self, metric: str, **tqdm_kwargs: Any):
        self.metric = metric
        self.kwargs = tqdm_kwargs
        self.bar = None

    def __call__(self, p: Any) -> None:
        if self.bar is None:
            tqdm = _tqdm()
            self.bar = tqdm(total=p.n_total, initial=0, unit="trial", desc="automlp", **self.kwargs)
            self.bar.start_t -= p.elapsed_s  # the first trial ran before the bar opened: count its time
        self.bar.n = p.n_done
        best = f"{p.best_value:.4g}" if p.best_value is not None else "-"
        self.bar.set_postfix_str(f"best {self.metric} {best}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm():
    """tqdm.auto's widget where Jupyter can draw it (ipywidgets installed), else the text bar (in a notebook
    too, where tqdm.auto would warn and fall back to it)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def make_progress(choice: Any, metric: str) -> Callable | None:
    """The progress callback for `progress=`: None or False (nothing), "bar" or True (`ProgressBar`), or a
    callable taking `search.Progress`."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "bar":
        return ProgressBar(metric)
    if callable(choice):
        return choice
    raise ValueError(f"The 'progress' parameter must be None, 'bar' or a callable taking automlp's Progress. "
                     f"Got {choice!r} instead.")
