"""What a storm run prints and keeps: phase lines, the targets, a JSON file (plot: plots.py).

The targets (loadtests issue "load tests and performance"):
- reserve, hold path and sold-out path: product >= 0.8 x the reference's throughput;
- p99 <= 10 ms at 70 % of the product's own peak (open loop), on both paths;
- GET /api/drops with 20 live drops >= 0.5 x the same server's /healthz;
- reserve p99 on a 1,000,000-unit drop with 100,000 live holds <= 1.2 x on 100-unit drops.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtests import plots, worker_stalls
from loadtests.stats import Bucket, Latency, Phase, Target, limit_target, ratio_target

RESERVE_RATIO = 0.8
P99_LIMIT_MS = 10.0
LISTING_RATIO = 0.5
BIG_DROP_RATIO = 1.2


def latency_text(latency: Latency | None) -> str:
    if latency is None:
        return "no answers"
    return (
        f"p50 {latency.p50:.2f} p99 {latency.p99:.2f} p99.9 {latency.p999:.2f} "
        f"max {latency.max:.1f} ms"
    )


def phase_line(phase: Phase) -> str:
    outcomes = ", ".join(f"{key} x{n}" for key, n in phase.outcomes.items())
    lines = [
        f"{phase.label}: {phase.requests} answers, {phase.throughput:,.0f}/s over "
        f"{phase.seconds:.1f} s; {latency_text(phase.latency)}; {outcomes}"
    ]
    if phase.generator_lag is not None:
        lines.append(f"    generator lag p99 {phase.generator_lag.p99:.2f} ms")
    if phase.first_answers is not None:
        first = phase.first_answers
        lines.append(
            f"    {first.count} connections; their first answers p50 {first.p50:.2f}, "
            f"max {first.max:.1f} ms"
        )
    if phase.cpu:
        lines.append(
            "    cores: "
            + ", ".join(
                f"{k} {v:.3f}" if k == "steal" else f"{k} {v:.2f}" for k, v in phase.cpu.items()
            )
        )
    if phase.waits:
        lines.append(
            "    waited for a core: " + ", ".join(f"{k} {v:.0f} ms" for k, v in phase.waits.items())
        )
    if phase.stalls:
        lines.append("    worker stalls: " + worker_stalls.describe(phase.stalls))
    lines += [f"    NOTE: {note}" for note in phase.notes]
    return "\n".join(lines)


def find(phases: Sequence[Phase], scenario: str, name: str, server: str, mode: str) -> Phase | None:
    for phase in phases:
        if (phase.scenario, phase.server, phase.mode) == (scenario, server, mode):
            if phase.name.startswith(name):
                return phase
    return None


def p99(phase: Phase | None) -> float | None:
    return phase.latency.p99 if phase and phase.latency else None


def median_p99(phases: Iterable[Phase]) -> float | None:
    """The median of the phases' p99s: one phase caught in a slow second of the
    machine, on either side, does not decide a comparison of rounds."""
    values = [p.latency.p99 for p in phases if p.latency]
    return statistics.median(values) if values else None


def throughput(phase: Phase | None) -> float | None:
    return phase.throughput if phase else None


def targets(phases: Sequence[Phase], load_fraction: float) -> list[Target]:
    found: list[Target] = []
    for path in ("hold path", "sold-out path"):
        product = find(phases, "reserve", path, "product", "max")
        reference = find(phases, "reserve", path, "reference", "max")
        found.append(
            ratio_target(
                f"reserve {path}: product >= {RESERVE_RATIO} x reference (req/s)",
                throughput(product),
                throughput(reference),
                RESERVE_RATIO,
            )
        )
    for path in ("hold path", "sold-out path"):
        fixed = find(phases, "reserve", path, "product", "fixed")
        rate = f" ({fixed.rate:,.0f}/s)" if fixed and fixed.rate else ""
        found.append(
            limit_target(
                f"reserve {path}: p99 <= {P99_LIMIT_MS:g} ms at {load_fraction:.0%} of peak{rate}",
                p99(fixed),
                P99_LIMIT_MS,
                "ms",
            )
        )
    health = find(phases, "drops", "GET /healthz", "product", "max")
    listing = find(phases, "drops", "GET /api/drops", "product", "max")
    found.append(
        ratio_target(
            f"GET /api/drops >= {LISTING_RATIO} x GET /healthz (req/s)",
            throughput(listing),
            throughput(health),
            LISTING_RATIO,
        )
    )
    small = median_p99(p for p in phases if p.scenario == "big" and "-unit drops" in p.name)
    big = median_p99(p for p in phases if p.scenario == "big" and "live holds" in p.name)
    name = f"big drop: reserve p99 <= {BIG_DROP_RATIO} x that of small drops (median of rounds)"
    if small is None or big is None:
        found.append(Target(name, "not measured", None))
    else:
        found.append(
            Target(
                name,
                f"{big:.2f} ms vs {small:.2f} ms = {big / small:.2f}x",
                big <= BIG_DROP_RATIO * small,
            )
        )
    return found


def target_lines(found: Sequence[Target]) -> list[str]:
    return [f"[{t.verdict}] {t.name}: {t.measured}" for t in found]


def write_json(path: Path, summary: dict[str, Any], phases: Sequence[Phase]) -> None:
    payload = {**summary, "phases": [asdict(p) for p in phases]}
    path.write_text(json.dumps(payload, indent=1))


def load_phases(report: dict[str, Any]) -> list[Phase]:
    """The phases of a JSON report written by `write_json`."""
    phases = []
    for raw in report["phases"]:
        values = dict(raw)
        for key in ("latency", "generator_lag", "first_answers"):
            values[key] = Latency(**values[key]) if values.get(key) else None
        values["buckets"] = [Bucket(**bucket) for bucket in values["buckets"]]
        phases.append(Phase(**values))
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    """Draw a report's plot again: `python -m loadtests.report REPORT.json [OUT.png]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    source = Path(args[0])
    report = json.loads(source.read_text())
    target = Path(args[1]) if len(args) == 2 else source.with_suffix(".png")
    plots.storm(target, load_phases(report), report.get("title", source.stem), P99_LIMIT_MS)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
