"""Medians, ratios and the outputs of `make bench`: JSON (everything), Markdown (tables), PNG (chart).

The no-op section's medians and ratios are computed here; the real-work sections compute theirs
(bench/sections.py) and the targets are checked by bench/targets.py.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The system every ratio is about, and the systems it is compared with (in table order).
SUBJECT = "conveyor"
BASELINES = {
    "dramatiq": "÷ Dramatiq",
    "celery_prefork": "÷ Celery prefork",
    "celery_threads": "÷ Celery threads",
    "pika": "÷ raw pika",
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    #: Decimal places in the Markdown table.
    digits: int = 0


METRICS = [
    Metric("enqueue_each_per_s", "enqueue/s (one at a time)", True),
    Metric("enqueue_bulk_per_s", "enqueue/s (pipelined/batched)", True),
    Metric("drain_per_s", "drain/s", True),
    Metric("drain_from_ready_per_s", "drain/s from ready", True),
    Metric("e2e_each_per_s", "end-to-end/s (one at a time)", True),
    Metric("e2e_bulk_per_s", "end-to-end/s (pipelined/batched)", True),
    Metric("latency_p50_ms", "latency p50 ms", False, 1),
    Metric("latency_p99_ms", "latency p99 ms", False, 1),
    Metric("rss_mib", "worker RSS MiB", False),
    Metric("startup_s", "start-up s", False, 2),
]
BY_KEY = {m.key: m for m in METRICS}

#: Ratio rows: (label, the subject's metric, the baseline's metrics in order of preference).
RATIOS = [
    ("drain/s", "drain_per_s", ("drain_per_s",)),
    ("end-to-end/s, one at a time", "e2e_each_per_s", ("e2e_each_per_s",)),
    (
        "end-to-end/s, Conveyor batched (vs their fastest)",
        "e2e_bulk_per_s",
        ("e2e_bulk_per_s", "e2e_each_per_s"),
    ),
    ("enqueue/s, one at a time", "enqueue_each_per_s", ("enqueue_each_per_s",)),
    (
        "enqueue/s, Conveyor batched (vs their fastest)",
        "enqueue_bulk_per_s",
        ("enqueue_bulk_per_s", "enqueue_each_per_s"),
    ),
    ("latency p50", "latency_p50_ms", ("latency_p50_ms",)),
    ("latency p99", "latency_p99_ms", ("latency_p99_ms",)),
    ("worker RSS", "rss_mib", ("rss_mib",)),
]


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per system, the median of each metric over its successful runs."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if run.get("error"):
            continue
        per_system = values.setdefault(run["system"], {})
        for key, value in run["metrics"].items():
            if isinstance(value, int | float):
                per_system.setdefault(key, []).append(float(value))
    return {
        system: {key: statistics.median(vs) for key, vs in metrics.items()}
        for system, metrics in values.items()
    }


def ratios(meds: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """``ratios[baseline][row label]`` = Conveyor's median ÷ the baseline's (None: not measured)."""
    subject = meds.get(SUBJECT, {})
    table: dict[str, dict[str, float | None]] = {}
    for baseline in BASELINES:
        theirs = meds.get(baseline)
        if theirs is None:
            continue
        row: dict[str, float | None] = {}
        for label, ours_key, their_keys in RATIOS:
            ours = subject.get(ours_key)
            their = next((theirs[k] for k in their_keys if k in theirs), None)
            row[label] = round(ours / their, 3) if ours is not None and their else None
        table[baseline] = row
    return table


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def markdown(results: dict[str, Any]) -> str:
    """The whole report: targets first, then one part per section that ran."""
    machine, sections = results["machine"], results["sections"]
    lines = [
        f"# Side-by-side benchmark, {results['date']}",
        "",
        f"Sections: {', '.join(sections)}; median of {results['config']['runs']} run(s) each. "
        f"Total time {results['duration_s'] / 60:.1f} min.",
        f"Machine: {machine['cores']} cores ({machine.get('cpu', '?')}), Python {machine['python']}, "
        f"RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}, Redis {machine['redis']}; "
        + ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
        + f"; Conveyor at {machine['conveyor_commit']}.",
    ]
    lines += targets_markdown(results["targets"])
    for name, section in sections.items():
        lines += ["", f"## {section['title']}", ""]
        if name == "noop":
            lines += noop_markdown(section)
        elif name == "web":
            lines += web_markdown(section)
        else:
            lines += work_markdown(section)
    return "\n".join(lines) + "\n"


def targets_markdown(targets: list[dict[str, Any]]) -> list[str]:
    """The performance targets with what this run measured; nothing when the run measured none of
    them (a run of the ``crypto`` section alone)."""
    if not targets:
        return []
    lines = [
        "",
        "## Targets",
        "",
        "Ratios are Conveyor ÷ the same work without it: speed above 1 means Conveyor is faster; "
        "memory below 1 means it uses less.",
        "",
        "| target | wanted | measured | |",
        "|---|---:|---:|---|",
    ]
    for row in targets:
        verdict = {True: "met", False: "**not met**", None: "not measured"}[row["met"]]
        measured = "—" if row["ratio"] is None else f"{row['ratio']:.3f}{row.get('unit', '×')}"
        lines.append(f"| {row['target']} | {row['wanted']} | {measured} | {verdict} |")
    return lines


def work_markdown(section: dict[str, Any]) -> list[str]:
    """A real-work section: a table of its comparisons, how each side ran, and its details."""
    meds, config = section["medians"], section["config"]
    runs = len([r for r in section["runs"] if not r.get("error")])
    ours_name, theirs_name = section.get("sides") or ("Conveyor", "without Conveyor")
    lines = [
        ", ".join(f"{key.replace('_', ' ')}: {_value(value)}" for key, value in config.items())
        + f"; median of {runs} successful run(s), {section['duration_s']:.0f} s in all.",
        "",
        f"| measurement | {ours_name} | {theirs_name} | speed ratio |",
        "|---|---:|---:|---:|",
    ]
    keys = set()
    for c in section["comparisons"]:
        keys |= {f"{c['key']}.conveyor", f"{c['key']}.baseline"}
        ours, theirs = meds.get(f"{c['key']}.conveyor"), meds.get(f"{c['key']}.baseline")
        lines.append(
            f"| {c['label']} | {_fmt(ours, 2)} {c['unit']} | {_fmt(theirs, 2)} {c['unit']} "
            f"| {_ratio(section['ratios'].get(c['key']))} |"
        )
    lines += ["", "How each side ran:", ""]
    for c in section["comparisons"]:
        lines.append(f"- {c['label']}: **{ours_name}**: {c['conveyor']}; **{theirs_name}**: {c['baseline']}.")
    details = {k: v for k, v in meds.items() if k not in keys}
    if details:
        lines += [
            "",
            "Other medians: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,.2f}" for k, v in details.items())
            + ".",
        ]
    lines += _failures(section, lambda run: f"run {run['run']}")
    return lines


def _failures(section: dict[str, Any], name: Any) -> list[str]:
    errors = [run for run in section["runs"] if run.get("error")]
    lines = []
    if errors or section.get("error"):
        lines += ["", "Failed (left out of the medians):", ""]
        lines += [f"- {name(run)}: {run['error']}" for run in errors]
        if section.get("error"):
            lines.append(f"- the section: {section['error']}")
    return lines


def web_markdown(section: dict[str, Any]) -> list[str]:
    """The dashboard section: per page, p50 and p95 of its HTML and of its ``/api/`` twin, and
    whether the slower p95 meets the target."""
    meds, config, target = section["medians"], section["config"], section["target_ms"]
    runs = len([r for r in section["runs"] if not r.get("error")])
    lines = [
        ", ".join(f"{key.replace('_', ' ')}: {_value(value)}" for key, value in config.items())
        + f"; median of {runs} run(s), {section['duration_s']:.0f} s in all. Each request is timed "
        "whole, as a client on the same machine sees it (one keep-alive connection).",
        "",
        f"| page | HTML p50 ms | HTML p95 ms | /api/ p50 ms | /api/ p95 ms | p95 < {target:g} ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    pages = dict.fromkeys(p["label"].rsplit(" (", 1)[0] for p in section["probes"])
    for page in pages:
        cells = [meds.get(f"{page} ({twin}).{q}") for twin in ("html", "api") for q in ("p50", "p95")]
        worst = max((c for c in cells[1::2] if c is not None), default=None)
        verdict = "—" if worst is None or None in cells else ("yes" if worst < target else "**no**")
        lines.append(f"| {page} | " + " | ".join(_fmt(c, 1) for c in cells) + f" | {verdict} |")
    paths = {
        p["label"].rsplit(" (", 1)[0]: p["path"] for p in section["probes"] if p["label"].endswith("(html)")
    }
    if paths:
        lines += [
            "",
            "The pages' paths (the `/api/` twin is the same under `/api`, `/api/overview` for `/`):",
            "",
        ]
        lines += [f"- {page}: `{path}`" for page, path in paths.items()]
    errors: dict[str, str] = {}
    for run in section["runs"]:
        errors.update(run.get("errors") or {})
    if errors:
        lines += ["", "Not timed (no 200 answer):", ""]
        lines += [f"- {label}: {why}" for label, why in sorted(errors.items())]
    elif section.get("error"):
        lines += ["", f"Failed: {section['error']}"]
    return lines


def noop_markdown(section: dict[str, Any]) -> list[str]:
    """The no-op section: a table per system, the ratios to each other system, how each ran."""
    config, meds = section["config"], section["medians"]
    systems = [s for s in section["systems"] if s in meds]
    if config.get("enqueue_only"):
        return _enqueue_only_markdown(section)
    lines = [
        f"{config['jobs']:,} no-op jobs per measurement; {config['processes']} worker processes × "
        f"{config['threads']} threads serving the no-op queue only, prefetch {config['prefetch']} per "
        f"process; {config['latency_samples']} latency probes {config['probe_spacing_ms']:g} ms apart; "
        f"{section['duration_s'] / 60:.1f} min.",
        "",
        "| system | " + " | ".join(m.label for m in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for system in systems:
        info = section["systems"][system]
        cells = [_fmt(meds[system].get(m.key), m.digits) for m in METRICS]
        procs = meds[system].get("worker_processes")
        if procs is not None and cells[METRICS.index(BY_KEY["rss_mib"])] != "—":
            cells[METRICS.index(BY_KEY["rss_mib"])] += f" ({procs:.0f} procs)"
        lines.append(f"| {info['label']} | " + " | ".join(cells) + " |")
    ratio_table = section["ratios"]
    if SUBJECT in meds and ratio_table:
        baselines = [b for b in BASELINES if b in ratio_table]
        lines += [
            "",
            "Conveyor ÷ each other system (medians). Throughput: above 1 means Conveyor is faster; "
            "latency and RSS: below 1 means Conveyor is lower.",
            "",
            "| metric | " + " | ".join(BASELINES[b] for b in baselines) + " |",
            "|---|" + "---:|" * len(baselines),
        ]
        for label, _ours, _theirs in RATIOS:
            lines.append(
                f"| {label} | " + " | ".join(_ratio(ratio_table[b].get(label)) for b in baselines) + " |"
            )
    lines += ["", "How each system ran:", ""]
    for system in systems:
        info = section["systems"][system]
        producers = "; ".join(f"{name}: {how}" for name, how in info["producers"].items())
        lines.append(f"- **{info['label']}**: {info['description']}. Producers — {producers}.")
    lines += _failures(section, lambda run: f"{run['system']} run {run['run']}")
    lines += [
        "",
        "Metrics: *enqueue/s* = jobs confirmed per second by the producer into idle queues; "
        "*drain/s* = N ÷ (last completion − first completion) of an N-job backlog; "
        "*drain/s from ready* = N ÷ (last completion − first consumer attached), warm-up included; "
        "*end-to-end/s* = N ÷ (last completion − first enqueue), the producer (one process, one "
        "thread) running alongside the workers; *latency* = start in a worker − just before the send, "
        "single jobs into idle workers; *worker RSS* = VmRSS summed over every worker process "
        "(supervisors included), after the drain; *start-up* = launch until every worker process's "
        "consumer is attached.",
    ]
    return lines


def _enqueue_only_markdown(section: dict[str, Any]) -> list[str]:
    """``--enqueue-only``: the producers alone, their rates per run and the medians' ratios."""
    config, meds = section["config"], section["medians"]
    systems = [s for s in section["systems"] if s in meds]
    keys = [
        ("enqueue_each_per_s", "enqueue/s (one at a time)"),
        ("enqueue_bulk_per_s", "enqueue/s (pipelined/batched)"),
    ]
    lines = [
        f"Producers only (`--enqueue-only`): {config['jobs']:,} no-op jobs per measurement into idle "
        f"queues, no workers; {section['duration_s'] / 60:.1f} min. Each run's rates, then the median.",
        "",
        "| system | " + " | ".join(label for _key, label in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for system in systems:
        runs = [r for r in section["runs"] if r["system"] == system and not r.get("error")]
        cells = []
        for key, _label in keys:
            each = [_fmt(r["metrics"].get(key), 0) for r in runs if key in r["metrics"]]
            median = meds[system].get(key)
            cells.append(f"**{_fmt(median, 0)}** ({' / '.join(each)})" if median is not None else "—")
        lines.append(f"| {section['systems'][system]['label']} | " + " | ".join(cells) + " |")
    ratio_table = section["ratios"]
    rows = ("enqueue/s, one at a time", "enqueue/s, Conveyor batched (vs their fastest)")
    baselines = [b for b in BASELINES if b in ratio_table]
    if SUBJECT in meds and baselines:
        lines += ["", "| Conveyor ÷ | " + " | ".join(BASELINES[b][2:] for b in baselines) + " |"]
        lines += ["|---|" + "---:|" * len(baselines)]
        for row in rows:
            lines.append(
                f"| {row} | " + " | ".join(_ratio(ratio_table[b].get(row)) for b in baselines) + " |"
            )
    lines += ["", "How each system's producers ran:", ""]
    for system in systems:
        info = section["systems"][system]
        producers = "; ".join(f"{name}: {how}" for name, how in info["producers"].items())
        lines.append(f"- **{info['label']}**: {producers}.")
    loads = [f"{r['system']} {r['loadavg'][0]:.1f}" for r in section["runs"] if r.get("loadavg")]
    if loads:
        lines += ["", "Load average (1 min) as each measurement began: " + ", ".join(loads) + "."]
    return lines + _failures(section, lambda run: f"{run['system']} run {run['run']}")


def chart(results: dict[str, Any], path: Path) -> None:
    """No-op throughput per system (when that section ran), and each target's measured ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noop = results["sections"].get("noop")
    targets = [t for t in results["targets"] if t["ratio"] is not None]
    drained = noop and noop["medians"] and not noop["config"].get("enqueue_only")
    panels = [p for p in (drained and "noop", targets and "targets") if p]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 5.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "noop":
            _noop_bars(ax, noop)
        else:
            _target_bars(ax, targets)
    fig.suptitle(f"Conveyor side by side, median of {results['config']['runs']} — {results['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _noop_bars(ax: Any, section: dict[str, Any]) -> None:
    meds = section["medians"]
    systems = [s for s in section["systems"] if s in meds]
    series = [
        ("drain_per_s", "drain (backlog)"),
        ("e2e_each_per_s", "end-to-end, one at a time"),
        ("e2e_bulk_per_s", "end-to-end, pipelined/batched"),
    ]
    width = 0.27
    for i, (key, name) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(systems))]
        ys = [meds[s].get(key, 0.0) for s in systems]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, labels=[f"{y:,.0f}" if y else "" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(systems)), [section["systems"][s]["label"] for s in systems], fontsize=8)
    ax.set_ylabel("no-op jobs per second (median)")
    config = section["config"]
    ax.set_title(
        f"{config['jobs']:,} no-op jobs, {config['processes']} processes × {config['threads']} threads"
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _target_bars(ax: Any, targets: list[dict[str, Any]]) -> None:
    ys = list(range(len(targets)))[::-1]
    colours = ["#16a34a" if t["met"] else "#dc2626" for t in targets]
    ax.barh(ys, [t["ratio"] for t in targets], color=colours)
    for y, t in zip(ys, targets, strict=True):
        ax.plot([t["goal"], t["goal"]], [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.text(t["ratio"], y, f" {t['ratio']:.2f}× (wanted {t['wanted']})", va="center", fontsize=8)
    ax.set_yticks(ys, [t["target"] for t in targets], fontsize=8)
    ax.set_xlabel("Conveyor ÷ without Conveyor (black tick: the target)")
    ax.set_title("Targets: green met, red not met")
    ax.grid(axis="x", alpha=0.3)


def write_all(results: dict[str, Any], out_dir: Path, stem: str, latest: bool) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out_dir``; with ``latest``, the
    Markdown is also copied to ``latest.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    md_path.write_text(text)
    paths = [json_path, md_path]
    if latest:
        (out_dir / "latest.md").write_text(text)
        paths.append(out_dir / "latest.md")
    try:
        chart(results, png_path)
    except ImportError as exc:  # matplotlib comes with the `bench` extra
        print(f"no chart: {exc}")
    if png_path.exists():
        paths.append(png_path)
    return paths
