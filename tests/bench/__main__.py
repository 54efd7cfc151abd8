"""``python -m tests.bench [--quick] [scenario ...]``: the relay's speed, printed and written as JSON."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from . import replies, scenarios

FULL = {
    "latency": 200,
    # The ramped 1,000-stream row starts its streams over one second, as traffic arrives;
    # the rows at once show the worker's queue when they all arrive in the same instant.
    "concurrency": [
        {"streams": 200},
        {"streams": 1000, "ramp_s": 1.0, "direct_too": True},
        {"streams": 1000},
        {"streams": 2000},
    ],
    "throughput": 5,
    "disconnect": 20,
    "turns": {"latency": 200, "concurrent": 200},
    "fairness": {"paced": 200, "bursts": 20},
    "replies": {"turns": 1000, "writes": 100, "lag": 50},
}
QUICK = {
    "latency": 50,
    "concurrency": [{"streams": 200}, {"streams": 1000, "ramp_s": 1.0, "direct_too": True}],
    "throughput": 1,
    "disconnect": 5,
    "turns": {"latency": 50, "concurrent": 200},
    "fairness": {"paced": 200, "bursts": 20},
    "replies": {"turns": 200, "writes": 20, "lag": 10},
}


def run(names: list[str], sizes: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "pinning": scenarios.pinning(),
        "python": platform.python_version(),
        "python_pace_us": scenarios.python_pace(),
    }
    for api in ("chat", "responses"):
        if "latency" in names:
            report.setdefault("latency", []).append(scenarios.latency(api, sizes["latency"]))
        if "concurrency" in names:
            for row in sizes["concurrency"]:
                report.setdefault("concurrency", []).append(scenarios.concurrency(api, **row))
        if "fairness" in names:
            report.setdefault("fairness", []).append(scenarios.fairness(api, **sizes["fairness"]))
        if "throughput" in names:
            report.setdefault("throughput", []).append(scenarios.throughput(api, sizes["throughput"]))
        if "disconnect" in names:
            report.setdefault("disconnect", []).append(scenarios.disconnect(api, sizes["disconnect"]))
        if "turns" in names:
            report.setdefault("turns", []).append(scenarios.turn_latency(api, sizes["turns"]["latency"]))
            report["turns"][-1].update(scenarios.turn_concurrency(api, sizes["turns"]["concurrent"]))
        if "replies" in names:
            size = sizes["replies"]
            for redis in (False, True):
                report.setdefault("replies", []).append(replies.turns(api, size["turns"], redis))
            report.setdefault("reply_writes", []).append(replies.writes(api, size["writes"]))
            report.setdefault("reply_lag", []).append(replies.lag(api, size["lag"]))
    return report


def show(report: dict[str, Any]) -> None:
    print(
        f"# {report['pinning']}; Python {report['python']}, "
        f"sum(range(1000)) in {report['python_pace_us']:.1f} us on the service's core"
    )
    for row in report.get("latency", []):
        print(
            f"latency      {row['api']:9} 1 client, {row['requests']} streams of 20 deltas | "
            f"TTFB direct p50 {row['direct_ttfb_p50_ms']:.2f} ms, "
            f"service p50 {row['service_ttfb_p50_ms']:.2f} p99 {row['service_ttfb_p99_ms']:.2f} ms, "
            f"added p50 {row['added_ttfb_p50_ms']:.2f} ms (floor {row['floor_added_ttfb_p50_ms']:.2f}) | "
            f"total p50 {row['service_total_p50_ms']:.2f} ms | "
            f"server CPU {row['server_cpu_us_per_request']:.0f} us/request "
            f"(floor {row['floor_cpu_us_per_request']:.0f}) | "
            f"errors {row['errors']} (floor {row['floor_errors']})"
        )
        framework = row["framework"]
        print(
            f"  framework  {row['api']:9} the floor's relay behind gunicorn / gunicorn + Flask, "
            f"in a pass of their own | added p50 {framework['gunicorn_added_ttfb_p50_ms']:.2f} / "
            f"{framework['flask_added_ttfb_p50_ms']:.2f} ms "
            f"(floor {framework['floor_added_ttfb_p50_ms']:.2f}) | "
            f"server CPU {framework['gunicorn_cpu_us_per_request']:.0f} / "
            f"{framework['flask_cpu_us_per_request']:.0f} us/request | "
            f"errors {framework['gunicorn_errors']} / {framework['flask_errors']} "
            f"(floor {framework['floor_errors']})"
        )
    for row in report.get("concurrency", []):
        direct = f" (direct {row['direct_all_done_s']:.2f} s)" if "direct_all_done_s" in row else ""
        started = f"over {row['ramp_s']:g} s" if row["ramp_s"] else "at once"
        print(
            f"concurrency  {row['api']:9} {row['streams']:5} streams x 50 deltas 20 ms apart, "
            f"started {started:9} | "
            f"all done {row['all_done_s']:.2f} s{direct} | TTFB p50 {row['ttfb_p50_ms'] or 0:.1f} "
            f"p99 {row['ttfb_p99_ms'] or 0:.1f} ms | RSS {row['rss_per_stream_kb']:.1f} KB/stream | "
            f"server CPU {row['server_cpu_ms_per_1000_paced_deltas']:.1f} ms per 1000 paced deltas "
            f"(opens included)"
            + (
                f", {row['server_cpu_ms_per_open']:.2f} ms per open"
                if "server_cpu_ms_per_open" in row
                else ""
            )
            + f" | errors {row['errors']}"
        )
        if "floor" in row:
            floor = row["floor"]
            print(
                f"  floor      {row['api']:9} the same through a raw gevent relay | "
                f"all done {floor['all_done_s']:.2f} s | TTFB p50 {floor['ttfb_p50_ms'] or 0:.1f} "
                f"p99 {floor['ttfb_p99_ms'] or 0:.1f} ms | "
                f"CPU {floor['cpu_ms_per_1000_paced_deltas']:.1f} ms per 1000 paced deltas | "
                f"errors {floor['errors']}"
            )
    for row in report.get("fairness", []):
        for case in ("alone", "beside_bursts"):
            figures = row[case]
            print(
                f"fairness     {row['api']:9} {row['paced']} paced streams {case.replace('_', ' '):13} | "
                f"TTFB p99 {figures['ttfb_p99_ms'] or 0:.1f} ms, gap p99 {figures['gap_p99_ms'] or 0:.1f} "
                f"max {figures['gap_max_ms'] or 0:.1f} ms | errors {figures['errors']}, "
                f"burst errors {figures['burst_errors']}"
            )
    for row in report.get("throughput", []):
        print(
            f"throughput   {row['api']:9} 8 streams x 2000 unpaced deltas | "
            f"{row['deltas_per_s']:,.0f} deltas/s (direct {row['direct_deltas_per_s']:,.0f}) | "
            f"server CPU {row['server_cpu_ms_per_1000_deltas']:.2f} ms per 1000 deltas | "
            f"errors {row['errors']}"
        )
    for row in report.get("turns", []):
        print(
            f"turns        {row['api']:9} 1 client, {row['requests']} turns vs stateless (SQLite) | "
            f"TTFB stateless p50 {row['stateless_ttfb_p50_ms']:.2f} ms, "
            f"turn p50 {row['turn_ttfb_p50_ms']:.2f} p99 {row['turn_ttfb_p99_ms']:.2f} ms, "
            f"added p50 {row['turn_added_ttfb_p50_ms']:.2f} ms | {row['turns']} concurrent turns "
            f"on 2 workers: done {row['all_done_s']:.2f} s, errors {row['errors']}, "
            f"stored complete {row['stored_complete']}, 'database is locked' {row['database_locked']}"
        )
    for row in report.get("replies", []):
        print(
            f"replies      {row['api']:9} {row['turns']} turns at once on 1 worker, "
            f"{'Redis' if row['redis'] else 'no Redis':8} | server CPU "
            f"{row['server_cpu_ms_per_1000_paced_deltas']:.1f} ms per 1000 paced deltas (opens included) vs "
            f"{row['stateless_cpu_ms_per_1000_paced_deltas']:.1f} stateless: x{row['ratio']:.2f} | "
            f"per open {row['turn_open_ms']:.2f} vs {row['stateless_open_ms']:.2f} ms; beyond the open "
            f"{row['turns_cpu_ms_per_1000_deltas_beyond_the_open']:.1f} vs "
            f"{row['stateless_cpu_ms_per_1000_deltas_beyond_the_open']:.1f} ms per 1000 deltas: "
            f"x{row['delta_ratio']:.2f} | all done {row['all_done_s']:.2f} s "
            f"(stateless {row['stateless_all_done_s']:.2f}), TTFB p50 {row['ttfb_p50_ms'] or 0:.1f} "
            f"p99 {row['ttfb_p99_ms'] or 0:.1f} ms | errors {row['errors']} (stateless "
            f"{row['stateless_errors']}, opens {row['open_errors']}), "
            f"stored complete {row['stored_complete']}"
        )
    for row in report.get("reply_writes", []):
        if "skipped" in row:
            print(f"reply writes {row['api']:9} skipped: {row['skipped']}")
            continue
        print(
            f"reply writes {row['api']:9} {row['turns']} turns of 3 s at once (Postgres) | "
            f"{row['checkpoint_writes_per_reply_second']:.2f} checkpoint writes per reply per second "
            f"({row['row_updates']} updates of replies in {row['reply_seconds']:.0f} reply-seconds, "
            f"ends included) "
            f"| errors {row['errors']}, stored complete {row['stored_complete']}"
        )
    for row in report.get("reply_lag", []):
        if "skipped" in row:
            print(f"reply lag    {row['api']:9} skipped: {row['skipped']}")
            continue
        print(
            f"reply lag    {row['api']:9} {row['turns']} turns followed from another host through Redis | "
            f"lag p50 {row['lag_p50_ms']:.1f} p99 {row['lag_p99_ms']:.1f} max {row['lag_max_ms']:.1f} ms "
            f"over {row['events']} events | reattach TTFB p50 "
            f"{row['reattach_ttfb_same_worker_p50_ms']:.2f} ms "
            f"(same worker), {row['reattach_ttfb_other_host_p50_ms']:.2f} ms "
            f"(other host; p99 {row['reattach_ttfb_other_host_p99_ms']:.2f})"
        )
    for row in report.get("disconnect", []):
        print(
            f"disconnect   {row['api']:9} client close -> upstream closed | streaming p50 "
            f"{row['streaming_p50_ms']:.2f} max {row['streaming_max_ms']:.2f} ms | silent p50 "
            f"{row['silent_p50_ms']:.2f} max {row['silent_max_ms']:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=list(FULL))
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 90 s in all")
    parser.add_argument("--json", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args()
    started = time.monotonic()
    report = run(args.scenarios, QUICK if args.quick else FULL)
    report["seconds"] = round(time.monotonic() - started, 1)
    show(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"# {report['seconds']} s; written to {args.json}")


if __name__ == "__main__":
    main()
