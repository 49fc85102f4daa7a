"""Medians, ratios and the three outputs of `make bench`: JSON (everything), Markdown (tables), PNG (chart)."""

from __future__ import annotations

import json
import shutil
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


def markdown(results: dict[str, Any]) -> str:
    config, machine, meds = results["config"], results["machine"], results["medians"]
    systems = [s for s in results["systems"] if s in meds]
    lines = [
        f"# Side-by-side benchmark, {results['date']}",
        "",
        f"{config['jobs']:,} no-op jobs per measurement, median of {config['runs']} run(s); "
        f"{config['processes']} worker processes × {config['threads']} threads, prefetch "
        f"{config['prefetch']} per process; {config['latency_samples']} latency probes "
        f"{config['probe_spacing_ms']:g} ms apart.",
        f"Machine: {machine['cores']} cores ({machine.get('cpu', '?')}), Python {machine['python']}, "
        f"RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}, Redis {machine['redis']}; "
        + ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
        + ".",
        f"Total time {results['duration_s'] / 60:.1f} min.",
        "",
        "| system | " + " | ".join(m.label for m in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for system in systems:
        info = results["systems"][system]
        cells = [_fmt(meds[system].get(m.key), m.digits) for m in METRICS]
        procs = meds[system].get("worker_processes")
        if procs is not None and cells[METRICS.index(BY_KEY["rss_mib"])] != "—":
            cells[METRICS.index(BY_KEY["rss_mib"])] += f" ({procs:.0f} procs)"
        lines.append(f"| {info['label']} | " + " | ".join(cells) + " |")
    ratio_table = results["ratios"]
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
            cells = [ratio_table[b].get(label) for b in baselines]
            lines.append(
                f"| {label} | " + " | ".join("—" if c is None else f"{c:.2f}×" for c in cells) + " |"
            )
    lines += ["", "How each system ran:", ""]
    for system in systems:
        info = results["systems"][system]
        producers = "; ".join(f"{name}: {how}" for name, how in info["producers"].items())
        lines.append(f"- **{info['label']}**: {info['description']}. Producers — {producers}.")
    errors = [run for run in results["runs"] if run.get("error")]
    if errors:
        lines += ["", "Failed runs (left out of the medians):", ""]
        lines += [f"- {run['system']} run {run['run']}: {run['error']}" for run in errors]
    lines += [
        "",
        "Metrics: *enqueue/s* = jobs confirmed per second by the producer into idle queues; "
        "*drain/s* = N ÷ (last completion − first completion) of an N-job backlog; "
        "*drain/s from ready* = N ÷ (last completion − first consumer attached), warm-up included; "
        "*end-to-end/s* = N ÷ (last completion − first enqueue), the producer (one process, one "
        "thread) running alongside the workers; *latency* = start in a worker − just before the send, single jobs into idle "
        "workers; *worker RSS* = VmRSS summed over every worker process (supervisors included), "
        "after the drain; *start-up* = launch until every worker process's consumer is attached.",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: drain and end-to-end throughput per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meds = results["medians"]
    systems = [s for s in results["systems"] if s in meds]
    labels = [results["systems"][s]["label"] for s in systems]
    series = [
        ("drain_per_s", "drain (backlog)"),
        ("e2e_each_per_s", "end-to-end, producer one at a time"),
        ("e2e_bulk_per_s", "end-to-end, producer pipelined/batched"),
    ]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.27
    for i, (key, name) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(systems))]
        ys = [meds[s].get(key, 0.0) for s in systems]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, labels=[f"{y:,.0f}" if y else "" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(systems)), labels)
    ax.set_ylabel("jobs per second (median)")
    config = results["config"]
    ax.set_title(
        f"{config['jobs']:,} no-op jobs, {config['processes']} processes × {config['threads']} threads, "
        f"median of {config['runs']} — {results['date']}"
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """``<date>.json``, ``<date>.md``, ``<date>.png`` and ``latest.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / results["date"]
    json_path, md_path, png_path = (
        stem.with_suffix(".json"),
        stem.with_suffix(".md"),
        stem.with_suffix(".png"),
    )
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown(results))
    shutil.copyfile(md_path, out_dir / "latest.md")
    chart(results, png_path)
    return [json_path, md_path, png_path, out_dir / "latest.md"]
