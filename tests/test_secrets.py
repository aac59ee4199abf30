"""Secrets (issue 6): a canary token, made at run time and accepted by the local lab's tenant, is run
through the whole workbook headless, the CLI with -v (success and error paths, a tenant that echoes
it back), the reprs of everything that holds it, and DEBUG logs. It must appear nowhere: not whole,
not its secret part, not a 16-character piece of that (tests/hardening_report.py: Canary).

The tenant fault cases of tests/test_hardening.py run with the same kind of canary and count leaks
in their error messages, tracebacks and logs; the refusal of http:// hosts is tested there too.
"""
from __future__ import annotations

import json
import logging
import os

import pytest

from hardening_report import canary, fault_record  # noqa: F401  (fixtures)
from labkit.settings import Settings


@pytest.fixture
def canary_env(local_lab, canary, monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith(("DT_", "LABKIT_", "LAB_", "FRONTEND_URL", "KUBECONFIG"))]:
        monkeypatch.delenv(key)
    env = canary.env(local_lab)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    return env


# ---------------------------------------------------------------- the workbook, headless
@pytest.fixture(scope="module")
def executed(local_lab, canary, kernel_env, tmp_path_factory):
    """All four notebooks run headless with the canary as DT_API_TOKEN and DT_PLATFORM_TOKEN."""
    from labkit.cluster import Cluster
    from labkit.workbook import NOTEBOOKS, ORDER, run_notebook

    cluster = Cluster(Settings.load(environ=local_lab.env, dotenv=None))
    if cluster.flag_file().flag("cartFailure").default_variant != "off":
        cluster.set_default_variant("cartFailure", "off")
        cluster.restart_flagd(timeout=30)
    out = tmp_path_factory.mktemp("executed-with-canary")
    env = {**canary.env(local_lab), **kernel_env, "LABKIT_STATIC_CHARTS": "1"}
    written = {}
    for name in ORDER:
        written[name] = run_notebook(NOTEBOOKS / f"{name}.ipynb", out, env, timeout=300)
    return written


@pytest.mark.notebooks
@pytest.mark.parametrize("name", ["00-setup", "01-introduce-change", "02-review-problem", "03-roll-back"])
def test_workbook_outputs_and_html_never_show_the_token(name, executed, canary, fault_record):
    rec = fault_record("secrets", f"workbook {name} headless (.ipynb and .html)")
    path = executed[name]
    book = json.loads(path.read_text(encoding="utf-8"))
    html = path.with_suffix(".html").read_text(encoding="utf-8")
    rec.leaked = canary.hits(path.read_text(encoding="utf-8"), html)
    errors = [o for c in book["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "\n".join("\n".join(o.get("traceback", [])) for o in errors)[-2000:]
    assert sum(len(c.get("outputs", [])) for c in book["cells"]) > 3, "the notebook showed nothing"
    assert rec.leaked == 0


# ---------------------------------------------------------------- the CLI with -v
CLI_OK = [
    ["-v", "event", "cart", "cartFailure", "off", "--old", "off"],
    ["-v", "failures", "--since", "10m"],
    ["-v", "problems", "--since", "1h"],
    ["-v", "logs", "--since", "1h", "--limit", "3"],
    ["-v", "check"],
    ["-v", "flags"],
]


def _run_cli(argv, capsys) -> tuple[int, str]:
    from labkit import cli

    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out + err


def test_cli_verbose_never_shows_the_token(canary, canary_env, capsys, caplog, fault_record):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("secrets", "CLI -v: event, failures, problems, logs, check, flags")
    texts = []
    for argv in CLI_OK:
        code, text = _run_cli(argv, capsys)
        texts.append(text)
        assert code == 0, f"{argv}: {text[-800:]}"
    rec.leaked = canary.hits(*texts, caplog.text)
    assert rec.leaked == 0


# a tenant that answers with errors, some echoing the token back (a proxy, a careless server)
def _echo(canary, status):
    return {"error": {"code": status, "message": f"token {canary.api} / {canary.platform} rejected "
                                                 f"(secret {canary.api.rsplit('.', 1)[1]})"}}


ERROR_FAULTS = [
    ("401", 401, False), ("401 echoing the token", 401, True),
    ("403", 403, False), ("403 echoing the token", 403, True),
    ("500", 500, False), ("500 echoing the token", 500, True),
]


@pytest.mark.parametrize("name,status,echo", ERROR_FAULTS, ids=[f[0] for f in ERROR_FAULTS])
def test_cli_verbose_error_paths_never_show_the_token(name, status, echo, local_lab, canary, canary_env,
                                                       capsys, caplog, fault_record):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("secrets", f"CLI -v error paths, tenant {name}")
    body = _echo(canary, status) if echo else None
    local_lab.tenant_server.faults.add(status=status, body=body, path_prefix="/api/v2/")
    local_lab.tenant_server.faults.add(status=status, body=body, path_prefix="/platform/")
    texts = []
    for argv in (["-v", "event", "cart", "cartFailure", "on", "--old", "off"], ["-v", "failures"],
                 ["-v", "problems"], ["-v", "logs"], ["-v", "check"],
                 ["-v", "set", "cartFailure", "on", "--dry-run"]):
        code, text = _run_cli(argv, capsys)
        texts.append(text)
        if argv[1] != "set":
            assert code != 0, f"{argv} should fail: {text[-500:]}"
    local_lab.tenant_server.faults.clear()
    rec.leaked = canary.hits(*texts, caplog.text)
    assert any("Traceback" in t for t in texts), "-v shows where an error came from"
    assert rec.leaked == 0


# ---------------------------------------------------------------- reprs, logs, a whole lab run
def test_reprs_and_debug_logs_of_a_lab_run_never_show_the_token(local_lab, canary, canary_env, caplog,
                                                                 capsys, fault_record):
    from labkit.lab import Lab

    caplog.set_level(logging.DEBUG)
    rec = fault_record("secrets", "repr/str of Settings, Dynatrace, Lab; DEBUG logs of a lab run")
    settings = Settings.load(dotenv=None)
    lab = Lab(settings)
    try:
        seen = [repr(settings), str(settings), repr(settings.api_token), str(settings.platform_token),
                repr(lab), str(lab), lab._repr_html_(), repr(lab.dynatrace), str(lab.dynatrace),
                repr(lab.cluster), repr(lab.shop), repr(vars(lab)), repr(vars(lab.dynatrace)), settings.where()]
        seen.append(str(lab.check()))
        event = lab.inform_dynatrace("off", old="off")
        seen += [event.summary(), repr(event)]
        seen.append(lab.error_logs(since="now-10m").to_string())
        seen.append(lab.failed_requests(since="now-10m").to_string())
        with pytest.raises(TypeError):
            import pickle

            pickle.dumps(settings)  # a Secret never goes into a pickle (a notebook cache, a worker)
    finally:
        lab.close()
    out, err = capsys.readouterr()
    rec.leaked = canary.hits(*seen, out, err, caplog.text)
    assert rec.leaked == 0
    assert settings.api_token.reveal() == canary.api  # the canary really was the token in use
