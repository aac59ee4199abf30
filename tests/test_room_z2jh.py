"""The room's Zero to JupyterHub recipe, checked without a cluster: the values against the chart's own
schema, the hub config the chart's jupyterhub_config.py renders from them, and that every labkit part
the values name exists and works.

The chart's files are read at test time from a copy of jupyterhub/zero-to-jupyterhub-k8s (Z2JH_REPO:
a git clone; chart 4.4.0, the version the README installs); nothing of the chart is kept in this repo.
Without a copy (or without kubespawner for the render) those checks skip with a reason.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "labkit/room/z2jh/values.yaml"
CHART_TAG = "4.4.0"
REPO = Path(os.environ.get("Z2JH_REPO", "/work/.mirror/jupyterhub+zero-to-jupyterhub-k8s/repo"))


def chart_file(path: str) -> str:
    if not REPO.exists():
        pytest.skip(f"no copy of zero-to-jupyterhub-k8s at {REPO} (set Z2JH_REPO to a clone)")
    done = subprocess.run(["git", "-C", str(REPO), "show", f"{CHART_TAG}:{path}"], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"the copy at {REPO} has no {CHART_TAG}:{path}")
    return done.stdout


def merged(defaults: dict, ours: dict) -> dict:
    """The values helm renders with: the chart's defaults under ours (maps merge, the rest replaces)."""
    out = dict(defaults)
    for key, value in ours.items():
        out[key] = merged(defaults[key], value) if isinstance(value, dict) and isinstance(defaults.get(key), dict) \
            else value
    return out


def ours() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_the_values_validate_against_the_charts_schema():
    import jsonschema

    schema = yaml.safe_load(chart_file("jupyterhub/values.schema.yaml"))
    values = merged(yaml.safe_load(chart_file("jupyterhub/values.yaml")), ours())
    errors = [f"{'.'.join(map(str, e.path))}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(values)]
    assert errors == []


def test_the_chart_renders_a_hub_config_with_the_seats_the_board_and_the_seat_env(tmp_path):
    pytest.importorskip("kubespawner", reason="rendering the chart's hub config needs jupyterhub-kubespawner")
    hub = tmp_path / "usr/local/etc/jupyterhub"
    (hub / "config").mkdir(parents=True)
    (hub / "secret").mkdir()
    values = merged(yaml.safe_load(chart_file("jupyterhub/values.yaml")), ours())
    (hub / "secret/values.yaml").write_text(yaml.safe_dump(values))
    # what the chart's Secret template generates (tokens, cookie secret) when helm installs it
    for key in [f"hub.services.{k}.apiToken" for k in values["hub"]["services"]] + [
            "hub.config.JupyterHub.cookie_secret", "hub.config.CryptKeeper.keys"]:
        (hub / "secret" / key).write_text(secrets.token_hex(32))
    for name in ("hub", "proxy-api", "proxy-public", "singleuser", "image-pull-secret", "priority",
                 "user-scheduler"):  # what the chart's configmap names
        (hub / "config" / name).write_text(name)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    # the chart's helper, reading the files above instead of the pod's mounts
    (config_dir / "z2jh.py").write_text(chart_file("jupyterhub/files/hub/z2jh.py")
                                        .replace("/usr/local/etc/jupyterhub", str(hub)))
    # pycurl is the hub image's; the render does not make requests
    text = chart_file("jupyterhub/files/hub/jupyterhub_config.py").replace(
        'AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")', "")
    (config_dir / "jupyterhub_config.py").write_text(text)
    script = f"""
import json, sys
from traitlets.config import Config
c = Config()
get_config = lambda: c
exec(compile(open({str(config_dir / 'jupyterhub_config.py')!r}).read(), "jupyterhub_config.py", "exec"),
     {{"get_config": get_config, "__file__": {str(config_dir / 'jupyterhub_config.py')!r}}})
print(json.dumps({{
  "authenticator": c.JupyterHub.authenticator_class, "allowed": sorted(c.Authenticator.allowed_users),
  "admins": sorted(c.Authenticator.admin_users), "secrets": c.SeatAuthenticator.secrets_file,
  "services": c.JupyterHub.services, "roles": c.JupyterHub.load_roles, "spawner": c.JupyterHub.spawner_class,
  "image": c.KubeSpawner.image, "env": c.KubeSpawner.environment, "url": c.Spawner.default_url,
  "mem": c.KubeSpawner.mem_limit}}, default=str))
"""
    env = {**os.environ, "HUB_SERVICE_PORT": "8081", "PROXY_API_SERVICE_PORT": "8001", "POD_NAMESPACE": "labkit-room"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=config_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["authenticator"] == "labkit.room.auth.SeatAuthenticator"
    assert got["admins"] == ["facilitator"] and "seat-1" in got["allowed"]
    assert got["secrets"] == "/usr/local/etc/labkit-room/secrets.json"
    board = next(s for s in got["services"] if s["name"] == "labkit-board")
    assert board["url"] == "http://hub:8181" and board["command"][:3] == ["python3", "-m", "labkit.room.board"]
    assert any(r.get("services") == ["labkit-board"] for r in got["roles"])
    assert "jupyterhub-idle-culler" in [s["name"] for s in got["services"]]
    assert got["spawner"] == "kubespawner.KubeSpawner" and got["image"].endswith("labkit-room-seat:0.1.0")
    assert got["env"]["LABKIT_CLUSTER_NAME"] == "{username}" and got["env"]["LABKIT_STATE_DIR"] == "/home/jovyan/.labkit"
    assert got["url"] == "/lab/tree/01-introduce-change.ipynb" and got["mem"] == "1G"


def test_every_labkit_part_the_values_name_exists(tmp_path):
    from labkit.room.hub import HubConfig, SEAT_KEYS
    from labkit.room.seats import Room

    values = ours()
    assert set(values["singleuser"]["extraEnv"]) == set(SEAT_KEYS)
    pytest.importorskip("jupyterhub")
    from labkit.room.auth import SeatAuthenticator

    assert "secrets_file" in SeatAuthenticator.class_trait_names()
    # the seat pod's postStart fills the home as `labkit room` fills a seat's
    command = values["singleuser"]["lifecycleHooks"]["postStart"]["exec"]["command"]
    home = tmp_path / "jovyan"
    done = subprocess.run([sys.executable, *command[1:-1], str(home)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert (home / "01-introduce-change.ipynb").is_file()
    assert (home / ".ipython/profile_default/startup/00-labkit-room.py").is_file()
    # the board's role on the cluster is the one it has on this machine
    local = {}
    exec(compile(HubConfig(Room(tmp_path / "room", 1), proxy="chp").render(), "cfg", "exec"),  # noqa: S102
         {"c": type("C", (), {"__getattr__": lambda self, k: local.setdefault(k, type("T", (), {})())})()})
    roles = {r["name"]: r for r in local["JupyterHub"].load_roles}
    assert roles["labkit-board"]["scopes"] == values["hub"]["loadRoles"]["labkit-board"]["scopes"]
