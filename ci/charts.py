"""Trend charts as image files (SVG or PNG), drawn with matplotlib (the `charts` extra).

Top: build duration per image over runs; bottom: cache hit ratio per image with the goal.
Runs whose cache export failed are ringed in red. SVGs are reproducible (no date, fixed ids),
so a committed chart only changes when its data does.
"""

from __future__ import annotations

import pathlib

from .errors import InputError
from .trends import Collection

FORMATS = ("svg", "png")


def chart_format(path: pathlib.Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InputError("--chart", f"must end in .svg or .png, got {path.name!r}")
    return suffix


def render(collection: Collection, path: pathlib.Path, title: str = "dimbybot2 builds") -> None:
    """Write the chart; raises InputError for a bad path or a missing matplotlib."""
    fmt = chart_format(path)
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("--chart", "needs matplotlib: pip install 'dimbybot2-ci[charts]'") from None
    runs = collection.runs
    labels = [run.info.short for run in runs]
    positions = {id(run): index for index, run in enumerate(runs)}
    goal = runs[-1].hit_goal if runs else 0.7
    # Text stays text in the SVG (searchable, small), ids are fixed: the same data gives the same bytes.
    with matplotlib.rc_context({"svg.hashsalt": "dimbybot2-trends", "svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=(max(6.0, 0.5 * len(runs) + 3), 5.5), layout="constrained")
        duration_axes, ratio_axes = figure.subplots(2, 1, sharex=True)
        flagged = False
        for image in collection.images():
            series = collection.series(image)
            xs = [positions[id(run)] for run, _ in series]
            (line,) = duration_axes.plot(xs, [s.duration for _, s in series], marker="o", label=image)
            ratio_axes.plot(xs, [s.hit_ratio * 100 for _, s in series], marker="o", color=line.get_color(), label=image)
            failed = [(positions[id(run)], s) for run, s in series if s.cache_export == "failed"]
            if failed:
                duration_axes.scatter([x for x, _ in failed], [s.duration for _, s in failed], s=120, facecolors="none",
                                      edgecolors="red", linewidths=1.5, zorder=3,
                                      label="_" if flagged else "cache export failed")  # "_": no second legend entry
                flagged = True
        ratio_axes.axhline(goal * 100, color="grey", linestyle="--", linewidth=1, label=f"goal {goal:.0%}")
        duration_axes.set_ylabel("build duration (s)")
        duration_axes.set_ylim(bottom=0)
        ratio_axes.set_ylabel("cache hit ratio (%)")
        ratio_axes.set_ylim(0, 105)
        ratio_axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ratio_axes.set_xlabel("run (oldest first)")
        for axes in (duration_axes, ratio_axes):
            axes.grid(True, alpha=0.3)
            axes.legend(loc="best", fontsize=8)
        duration_axes.set_title(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format=fmt, metadata={"Date": None} if fmt == "svg" else {"Software": "dimbybot-ci"}, dpi=110)
