"""``python -m tests.soak [--streams N]``: many mixed streams through one gevent worker, for
leaks (see ``tests/soak/__init__.py``)."""

from __future__ import annotations

import argparse
import json

from . import soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=20_000)
    args = parser.parse_args()
    report = soak(args.streams)
    before, after = report["before"], report["after"]
    print(f"# {report['streams']} mixed streams through one gevent worker in {report['seconds']} s")
    print("# outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes"].items())))
    for key in ("rss_mb", "fds_besides_pool", "pooled_upstream", "greenlets", "upstream_open"):
        print(f"{key:16} after warm-up {before[key]!s:>8}   at the end {after[key]!s:>8}")
    growth = after["rss_mb"] - before["rss_mb"]
    print(f"# RSS growth {growth:+.1f} MB (target: under 10 MB after 20,000 streams)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
