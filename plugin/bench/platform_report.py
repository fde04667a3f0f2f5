"""Tables and the plot of a platform run (``plugin.bench.platform``), from its JSON document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugin.bench.report import targets_table
from plugin.tables import table

MIB = 2**20


def render_platform(doc: dict[str, Any]) -> str:
    """Every table of the run, then the fitted growth and the platform's figures."""
    parts = []
    meta = doc.get("meta", {})
    if meta:
        machine, load = meta.get("machine", {}), meta.get("load", {})
        parts.append(
            f"machine: {machine.get('cpus_usable')} usable CPUs ({machine.get('cpu_model')}), "
            f"load 1-min mean {load.get('load_1m_mean')}, CPU busy "
            f"{load.get('cpu_busy_percent')}%, {load.get('seconds')} s; started "
            f"{meta.get('started_at')}"
        )
    rows = [
        [
            r["users"],
            r["clusters"],
            round(r["bytes"] / MIB, 1),
            r["bytes_per_user"],
            r["rows_per_s"],
            r.get("server_us_per_row_written", "-"),
            r.get("server_us_per_row_read", "-"),
        ]
        for r in doc["memory_by_users"] + doc["memory_by_clusters"]
    ]
    headers = ["users", "clusters", "MiB", "B/user", "rows/s written"]
    headers += ["server µs/row written", "server µs/row read"]
    parts.append("Redis memory (states + plans, fast store; measured)\n" + table(headers, rows))
    rows = [
        [
            r["clusters"],
            r["histories_all"],
            r["histories_ranked"],
            r["histories_per_s"],
            r["bytes_per_entry"],
            r["full_bytes_per_entry"],
            round(r["all_bytes"] / MIB),
            round(r["all_bytes_full"] / MIB),
            r["all_seconds"],
            r["all_is"],
        ]
        for r in doc["table_by_clusters"]
    ]
    parts.append(
        "lookup table (plan cache) with the id model\n"
        + table(
            [
                "clusters",
                "histories",
                "ranked",
                "histories/s",
                "B/entry (n+W kept)",
                "B/entry (uncut)",
                "all MiB",
                "all MiB uncut",
                "all s (1 process)",
                "all is",
            ],
            rows,
        )
    )
    rows = [
        [
            r["users"],
            r["clusters"],
            r["events"],
            r["distinct_users"],
            r["events_per_s"],
            r["replans"],
            "-" if r["table_hit_rate"] is None else r["table_hit_rate"],
        ]
        for r in doc["worker_by_users"] + doc["worker_by_clusters"]
    ]
    parts.append(
        "worker (StreamWorker.handle, interleaved, replans on, table warm in Redis, no "
        "in-process ranking memory; measured)\n"
        + table(
            ["user base", "clusters", "events", "users", "events/s", "replans", "hit rate"], rows
        )
    )
    parts += drain_tables(doc)
    levers = doc.get("levers")
    if levers:
        rows = [
            [
                r["config"],
                " / ".join(f"{v:,.0f}" for v in r["events_per_s_runs"]),
                " / ".join(f"{v:.2f}" for v in r["ratio_to_before_runs"]),
                r["ratio_to_before"],
            ]
            for r in levers["summary"]
        ]
        parts.append(
            f"hot-path levers, paired runs ({levers['events']:,} events, "
            f"{levers['clusters']} clusters, cumulative)\n"
            + table(["configuration", "events/s (round 1 / 2)", "x before (1 / 2)", "mean x"], rows)
        )
    fits = doc["fits"]
    memory = fits["memory_vs_users"]
    rows = [
        [
            "Redis bytes vs users",
            memory["fit"],
            f"b = {memory['b_bytes_per_user']:,.0f} B/user",
            f"{memory['at_target_bytes'] / MIB:,.0f} MiB at "
            f"{doc['options']['target_users']:,} users ({memory['at_target_is']})",
        ]
    ]
    per_user = fits["memory_per_user_vs_clusters"]
    rows.append(["B/user vs clusters", per_user["fit"], f"b = {per_user['b']:.2f}", "-"])
    for key, label, unit, scale in (
        ("table_bytes_vs_clusters", "table size vs clusters", "MiB", MIB),
        ("uncut_table_bytes_vs_clusters", "uncut table size vs clusters", "MiB", MIB),
        ("precompute_s_vs_clusters", "precompute time vs clusters", "s", 1),
    ):
        fit = fits[key]
        rows.append(
            [
                label,
                fit["fit"],
                f"b = {fit['b']:.2f}",
                f"{fit['at_target'] / scale:,.0f} {unit} at "
                f"{doc['options']['target_clusters']} clusters",
            ]
        )
    for key, label in (
        ("worker_vs_users", "worker events/s vs users"),
        ("worker_vs_clusters", "worker events/s vs clusters"),
    ):
        fit = fits[key]
        rows.append([label, fit["fit"], f"b = {fit['b']:.2f}", "-"])
    parts.append("fitted growth\n" + table(["figure", "model", "exponent", "at target"], rows))
    found = targets_table(doc)  # the drain's events/s against issue 15's target
    if found:
        parts.append(found)
    return "\n\n".join(parts)


def plot_platform(doc: dict[str, Any], path: Path) -> Path:
    """Four panels: Redis memory vs users (with the fit out to the target), table size and
    precompute time vs clusters, worker events/s vs users and clusters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    by_users = doc["memory_by_users"]
    fit = doc["fits"]["memory_vs_users"]
    target = doc["options"]["target_users"]
    ax = axes[0][0]
    ax.plot(
        [r["users"] for r in by_users], [r["bytes"] / MIB for r in by_users], "o", label="measured"
    )
    xs = np.linspace(0, target, 50)
    ax.plot(xs, (fit["a_bytes"] + fit["b_bytes_per_user"] * xs) / MIB, "--", label="fit")
    ax.set_xlabel("users")
    ax.set_ylabel("Redis MiB")
    ax.set_title("Redis memory (states + plans)")
    ax.legend(fontsize=7)
    table_rows = doc["table_by_clusters"]
    clusters = [r["clusters"] for r in table_rows]
    for ax, field, scale, label in (
        (axes[0][1], "all_bytes", MIB, "lookup table MiB (all histories)"),
        (axes[1][0], "all_seconds", 1, "precompute s (all histories, 1 process)"),
    ):
        key = "table_bytes_vs_clusters" if field == "all_bytes" else "precompute_s_vs_clusters"
        f = doc["fits"][key]
        ax.loglog(clusters, [r[field] / scale for r in table_rows], "o", label="from the sample")
        xs = np.geomspace(min(clusters), doc["options"]["target_clusters"] * 2, 30)
        ax.loglog(xs, f["a"] * xs ** f["b"] / scale, "--", label=f"fit, b = {f['b']:.2f}")
        ax.set_xlabel("leaf clusters")
        ax.set_title(label)
        ax.legend(fontsize=7)
    ax = axes[1][1]
    for section, x, marker in (
        ("worker_by_users", "users", "o"),
        ("worker_by_clusters", "clusters", "s"),
    ):
        rows = doc[section]
        ax.semilogx(
            [r[x] for r in rows], [r["events_per_s"] for r in rows], marker=marker, label=f"vs {x}"
        )
    ax.set_ylabel("events/s")
    ax.set_title("worker events/s (user base / clusters)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def drain_tables(doc: dict[str, Any]) -> list[str]:
    """The Kafka drain's table and its profile's areas (none without a drain)."""
    drain = doc.get("drain")
    parts: list[str] = []
    if drain:
        steps = drain["seconds_by_step"]
        parts.append(
            "Kafka drain, same run and broker (aiokafka getmany; worker: handle on a batch "
            "thread, then commit)\n"
            + table(
                [
                    "events",
                    "raw /s",
                    "worker /s",
                    "worker/raw",
                    "replans",
                    "CPU us/event",
                    "read/core/plan/write s",
                ],
                [
                    [
                        drain["events"],
                        drain["raw_per_s"],
                        drain["worker_per_s"],
                        f"{100 * drain['worker_share_of_raw']:.2f}%",
                        drain["replans"],
                        # Absent in runs saved before it was measured.
                        drain.get("worker_cpu_us_per_event", "-"),
                        " / ".join(f"{steps[k]:.2f}" for k in ("read", "core", "plan", "write")),
                    ]
                ],
            )
        )
        profile = drain.get("profile")
        if profile:
            rows = [[a["area"], a["seconds"], f"{100 * a['share']:.1f}%"] for a in profile["areas"]]
            parts.append(
                f"where the drain's batch thread spends its time (cProfile, "
                f"{profile['events_per_s_under_profiler']} events/s under the profiler)\n"
                + table(["area (own time)", "s", "share"], rows)
            )
    return parts
