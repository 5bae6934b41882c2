"""Write a run's results: JSON (everything), a markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = {
    "ramp": ["sockets", "held", "connect_per_s", "connect_errors", "rss_mb", "kb_per_socket"],
    "fanout": ["listeners", "rate", "sent_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms",
               "deliveries_per_s", "lost", "duplicated", "cpu_us_per_delivery"],
    "saturation": ["listeners", "offered_rate", "deliveries_per_s", "p99_ms", "lost",
                   "duplicated", "cpu_us_per_delivery"],
    "mix": ["database", "pairs", "listeners", "room_rate", "p50_ms", "p99_ms", "max_ms",
            "deliveries_per_s", "lost", "duplicated", "cpu_us_per_delivery"],
    "slow": ["listeners", "stalled", "rate", "p99_before_ms", "p99_ms", "lost",
             "rss_start_mb", "rss_max_mb", "rss_end_mb", "stalled_closed_by_server"],
    "redis": ["workers", "listeners", "rate", "p50_ms", "p99_ms", "deliveries_per_s", "lost",
              "duplicated", "cpu_us_per_delivery"],
}


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [f"Run of {meta['date']} (git {meta['git']}, profile {meta['profile']}, "
             f"{meta.get('seconds', '?')} s; load average {meta['loadavg_at_start']} at start, "
             f"{meta.get('loadavg_at_end')} at end; server on core 0, client on core 1).", ""]
    for workload, cols in COLUMNS.items():
        rows = [r for r in results if r["workload"] == workload]
        if not rows:
            continue
        lines += [f"### {workload}", "", "| system | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for r in rows:
            if "skipped" in r or "error" in r:
                known = [_cell(r["params"][c]) for c in cols if c in r["params"]]
                note = r.get("skipped") or r.get("error")
                rest = len(cols) - len(known)
                lines.append(f"| {r['system']} | " + " | ".join(known + [note] + [""] * (rest - 1))
                             + " |")
                continue
            vals = [_cell(r["params"].get(c, r.get(c))) for c in cols]
            lines.append(f"| {r['system']} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def plots(out: Path, label: str, results: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fan = [r for r in results if r["workload"] == "fanout" and "p99_ms" in r]
    if fan:
        rates = sorted({r["params"]["rate"] for r in fan})
        fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
        for ax, rate in zip(axes[0], rates):
            for system in sorted({r["system"] for r in fan}):
                pts = sorted((r["params"]["listeners"], r["p99_ms"]) for r in fan
                             if r["system"] == system and r["params"]["rate"] == rate)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=system)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("listeners")
            ax.set_ylabel("p99 delivery latency (ms)")
            ax.set_title(f"fan-out, {rate} messages/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = out / f"{label}-latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    sat = [r for r in results if r["workload"] == "saturation" and "deliveries_per_s" in r]
    if sat:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [r["system"] for r in sat]
        vals = [r["deliveries_per_s"] for r in sat]
        ax.bar(names, vals, color="#4a7bb7")
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
        ax.set_ylabel("deliveries per second (p99 ≤ 200 ms, none lost)")
        ax.set_title(f"saturation, {sat[0]['params'].get('listeners')} listeners, one worker")
        fig.tight_layout()
        path = out / f"{label}-throughput.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    return made


def write(out: Path, meta: dict, results: list[dict], label: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{label}.json"
    js.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    md = out / f"{label}.md"
    md.write_text(markdown(meta, results))
    return [js, md, *plots(out, label, results)]
