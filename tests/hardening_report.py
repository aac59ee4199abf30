"""The hardening results table (issue 6): what the fault, secrets and bad-input tests injected and
what came of it, counted from the tests themselves, printed at the end of the pytest session.

A test asks for the `fault_record` fixture and calls it once per fault it injects:

    rec = fault_record("tenant", "event POST 503")      # injected
    ...                                                 # the test's own checks
    rec.lost = stored_twice + stored_never              # changes lost (events, flag edits)
    rec.leaked = canary_hits                            # secrets found where they must not be

A fault counts as survived only when its test passed (tests/conftest.py's makereport hook marks
the records of a failed test), so a red test can never show up as a green row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "hardening.md"
ORDER = ["tenant", "cluster", "sandbox", "shop", "secrets", "bad input"]


@dataclass
class Record:
    area: str
    name: str
    nodeid: str
    lost: int = 0
    leaked: int = 0
    passed: bool | None = None  # set from the test's outcome

    @property
    def survived(self) -> bool:
        return bool(self.passed) and self.lost == 0 and self.leaked == 0


RECORDS: list[Record] = []


@pytest.fixture
def fault_record(request):
    """fault_record(area, name, lost=0, leaked=0) -> Record (update .lost / .leaked as you learn)."""

    def record(area: str, name: str, lost: int = 0, leaked: int = 0) -> Record:
        rec = Record(area, name, request.node.nodeid, lost, leaked)
        RECORDS.append(rec)
        return rec

    return record


def mark_outcome(nodeid: str, passed: bool) -> None:
    """Called for every test phase report: a failed (or skipped) phase marks that test's records as not survived."""
    for rec in RECORDS:
        if rec.nodeid == nodeid:
            rec.passed = passed if rec.passed in (None, True) else False


def export() -> list[dict]:
    """This process's records, as an xdist worker sends them to the controller."""
    return [asdict(r) for r in RECORDS]


def merge(records: list[dict]) -> None:
    """A worker's records (export()) added to the controller's, which prints the table."""
    RECORDS.extend(Record(**r) for r in records)


def rows() -> list[list]:
    areas = ORDER + sorted({r.area for r in RECORDS} - set(ORDER))
    out = []
    for area in areas:
        recs = [r for r in RECORDS if r.area == area]
        if recs:
            out.append([area, len(recs), sum(r.survived for r in recs), sum(r.lost for r in recs),
                        sum(r.leaked for r in recs)])
    if out:
        out.append(["total", *(sum(r[i] for r in out) for i in range(1, 5))])
    return out


def table() -> str:
    """The results as a Markdown table (the README keeps a copy)."""
    header = ["area", "faults injected", "survived", "changes lost", "secrets leaked"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows():
        cells = [f"**{c}**" if row[0] == "total" else str(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures() -> list[Record]:
    return [r for r in RECORDS if not r.survived]


def terminal_summary(terminalreporter) -> None:
    if not RECORDS:
        return
    terminalreporter.write_sep("=", "hardening: faults, bad input and secrets")
    terminalreporter.write_line(table())
    for rec in failures():
        why = "test failed" if not rec.passed else f"lost {rec.lost}, leaked {rec.leaked}"
        terminalreporter.write_line(f"NOT SURVIVED: [{rec.area}] {rec.name} ({why}) {rec.nodeid}")
    try:
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT.write_text(table() + "\n", encoding="utf-8")
        terminalreporter.write_line(f"(also in {ARTIFACT.relative_to(ARTIFACT.parents[1])})")
    except OSError:
        pass


# ---- the canary: tokens made at run time, registered in a local lab's tenant, searched for everywhere
class Canary:
    """An API token and a platform token that exist only for this test session.

    `register(local_lab)` makes the local lab's tenant accept them (read + ingest; Grail);
    `hits(text)` counts where any of them, or the secret part of one, or a 16-character piece of
    that secret part, shows up in `text` (a partial leak is a leak).
    """

    def __init__(self):
        from labkit.sandbox import make_token

        self.api = make_token()
        self.platform = make_token("dt0s16")
        self._labs = []

    @property
    def needles(self) -> list[str]:
        out = []
        for token in (self.api, self.platform):
            secret = token.rsplit(".", 1)[1]
            out += [token, secret] + [secret[i:i + 16] for i in range(0, len(secret) - 15, 8)]
        return out

    def hits(self, *texts) -> int:
        return sum(text.count(n) for text in texts if text for n in self.needles)

    def register(self, local_lab) -> "Canary":
        from labkit.sandbox.dynatrace import READ_AND_INGEST_SCOPES, TokenInfo

        tenant = local_lab.tenant
        now = tenant.telemetry.clock()
        tenant.tokens[self.api] = TokenInfo(self.api, READ_AND_INGEST_SCOPES, "labkit canary", now, now)
        tenant.platform_tokens.add(self.platform)
        self._labs.append(local_lab)
        return self

    def unregister(self) -> None:
        for lab in self._labs:
            lab.tenant.tokens.pop(self.api, None)
            lab.tenant.platform_tokens.discard(self.platform)
        self._labs.clear()

    def env(self, local_lab) -> dict[str, str]:
        """The local lab's variables with the canary as DT_API_TOKEN and DT_PLATFORM_TOKEN."""
        return dict(local_lab.env, DT_API_TOKEN=self.api, DT_PLATFORM_TOKEN=self.platform)


@pytest.fixture(scope="module")
def canary(local_lab):
    """A canary token registered with the session's local lab for one test module."""
    c = Canary().register(local_lab)
    yield c
    c.unregister()


def exception_text(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, and the traceback Python would print."""
    import traceback

    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
