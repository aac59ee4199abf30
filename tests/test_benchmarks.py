"""benchmarks/run.py cannot break silently: it runs once, on every demo release the lab knows.

Its rows are asserted, never its targets' verdicts: --short-waits (a tenth of the pod times, a 1 s
shop) makes the numbers meaningless as speeds, and this suite shares the CPU with other tests.
"""
from __future__ import annotations

import sys

import installed  # tests/installed.py: a subprocess with a clean environment, its exit code checked

from labkit import releases

BENCH = installed.ROOT / "benchmarks" / "run.py"
ROWS = {
    "restart_flagd() overhead over the pod lifecycle",
    "python -m labkit flags",
    "import labkit",
    "send_change_event vs bare httpx POST",
    "24 h of cart at 1 min into a DataFrame",
    "Apply -> every pod serves: rollout vs scale",
    "no Ready flagd pod during a change (rollout)",
    "no Ready flagd pod during a change (scale)",
    "Apply overhead over the pod lifecycle (rollout)",
    "Apply overhead over the pod lifecycle (scale)",
    "Apply -> every pod serves (rollout)",
    "Apply -> the cart reads the new value",
    "shop cart operations per second",
    "a seat joining a shared local tenant",
    "a seat's failed_requests beside 1 other seats vs alone",
}


def table(stdout: str) -> list[list[str]]:
    """The printed table's body rows, split into cells (release, what, value, how, target, met)."""
    lines = stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("release ")) + 2  # header, rule
    return [[cell.strip() for cell in line.split(" | ")] for line in lines[start:]]


def test_the_bench_prints_every_row_on_every_release(tmp_path):
    out = installed.run([sys.executable, BENCH, "--repeat", "1", "--release", "all", "--short-waits"],
                        cwd=tmp_path, timeout=240).stdout
    rows = table(out)
    assert all(len(row) == 6 and row[5] in ("yes", "NO") for row in rows), out
    for version in releases.RELEASES:
        assert {row[1] for row in rows if row[0] == version} == ROWS, out
    assert len(rows) == len(ROWS) * len(releases.RELEASES), out  # each row once per release


def test_the_bench_says_its_releases(tmp_path):
    out = installed.run([sys.executable, BENCH, "--help"], cwd=tmp_path).stdout
    assert "{" + ",".join([*sorted(releases.RELEASES), "all"]) + "}" in out
    assert "--short-waits" in out
