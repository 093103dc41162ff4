"""The benchmarks' plots: one matplotlib setup (no display, one size and resolution).

- `storm`: per-second p50 / p99 latency and answers per second, phase by phase
  (loadtests/storm.py; `python -m loadtests.report REPORT.json` draws it again);
- `expiry`: each unit's lag behind its hold's expiry, and units expired vs units back
  (loadtests/expiry_bench.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.stats import Phase

if TYPE_CHECKING:
    from loadtests.expiry_watch import UnitBack

MIN_PLOTTED_SPAN = 0.5  # s: shorter per-second buckets are left off the plot
DPI = 110


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    pyplot().close(figure)


def storm(path: Path, phases: Sequence[Phase], title: str, limit_ms: float) -> None:
    """Per-second p50 / p99 latency and answers per second over the run, phase by phase."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    colours = {"product": "tab:blue", "reference": "tab:orange"}
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for i, phase in enumerate(phases):
        if not phase.buckets:
            continue
        # A phase's last sliver of a second holds a few answers: its rate and p99 are noise.
        whole = [b for b in phase.buckets if b.span >= MIN_PLOTTED_SPAN] or phase.buckets
        xs = [phase.offset + b.second + b.span / 2 for b in whole]
        colour = colours.get(phase.server, "tab:gray")
        top.plot(xs, [b.p99 for b in whole], color=colour, linewidth=1.4)
        top.plot(xs, [b.p50 for b in whole], color=colour, linewidth=0.8, ls="--")
        bottom.plot(xs, [b.rate for b in whole], color=colour, linewidth=1.2)
        last = phase.buckets[-1]
        start, end = phase.offset, phase.offset + last.second + last.span
        for axis in (top, bottom):
            axis.axvspan(start, end, color="0.93" if i % 2 else "0.97", zorder=0)
        short = f"{phase.name} ({phase.server[:3]}, {phase.mode})"
        top.annotate(
            short,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="left",
            color="0.3",
        )
    top.set_yscale("log")
    top.set_ylabel("latency, ms (solid p99, dashed p50)")
    top.set_title(title, fontsize=10)
    top.axhline(limit_ms, color="tab:red", linewidth=0.6, ls=":")
    bottom.set_ylabel("answers per second")
    bottom.set_xlabel("seconds since the run began")
    handles = [Line2D([], [], color=c, label=name) for name, c in colours.items()]
    top.legend(handles=handles, loc="upper right", fontsize=8)
    save(figure, path)


def expiry(
    path: Path,
    units: Sequence[UnitBack],
    release: Sequence[tuple[int, int]],
    title: str,
    target_ms: float,
) -> None:
    """Lag over time (top) and units expired vs units back (bottom)."""
    plt = pyplot()

    origin = units[0].expires_ms if units else 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    top.scatter(
        [(u.expires_ms - origin) / 1000 for u in units],
        [u.lag_ms for u in units],
        s=1,
        label="stock lag (k-th unit back - k-th expiresAt), polled",
        rasterized=True,
    )
    if release:
        top.scatter(
            [(e - origin) / 1000 for e, _ in release],
            [lag for _, lag in release],
            s=1,
            alpha=0.4,
            label="per-hold release lag (release.lua's own time)",
            rasterized=True,
        )
    top.axhline(target_ms, color="red", linestyle="--", label=f"target {target_ms:g} ms")
    top.set_ylabel("lag (ms)")
    top.legend(loc="upper left", markerscale=6)
    top.set_title(title)
    expiries = [(u.expires_ms - origin) / 1000 for u in units]
    backs = sorted((u.seen_ms - origin) / 1000 for u in units)
    counts = list(range(1, len(units) + 1))
    bottom.step(expiries, counts, where="post", label="units expired (expiresAt)")
    bottom.step(backs, counts, where="post", label="units back in stock (polled)")
    bottom.set_xlabel("seconds since the first expiresAt (Redis clock)")
    bottom.set_ylabel("units")
    bottom.legend(loc="upper left")
    save(fig, path)
