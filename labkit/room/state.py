"""One seat's real state, read from the seat's own lab with labkit's public API (not from its reports):
what every Ready flagd pod serves, what the cart reads, the problem, and the seat's timeline."""
from __future__ import annotations

from pathlib import Path

from labkit import settings as names
from labkit.settings import Settings, read_dotenv
from labkit.timeline import ROLLED_BACK, Timeline

FAILURE_STEPS = ("first failure seen by the shop", "error logs seen")


def seat_settings(state_dir: Path) -> Settings | None:
    """The seat's lab as its lab.env names it; None while the seat has started no lab."""
    env = read_dotenv(Path(state_dir) / "lab.env")
    if not env.get("DT_URL"):
        return None
    return Settings.load(environ=env, dotenv=None)


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__


def read_seat(state_dir: Path, flag: str = names.FLAG, service: str = names.SERVICE) -> dict:
    """What the seat's lab shows right now; a part that cannot be read says why, never guesses."""
    settings = seat_settings(state_dir)
    if settings is None:
        return {"lab": "not started"}
    state: dict = {"lab": "running"}
    state.update(_flagd(settings, flag))
    state.update(_problem(settings, service))
    steps = Timeline(settings.timeline_path()).steps
    state["timeline_steps"] = [s.kind for s in steps]
    state["rolled_back"] = any(s.kind == ROLLED_BACK for s in steps)
    return state


def _flagd(settings: Settings, flag: str) -> dict:
    from labkit.cluster import Cluster

    try:
        cluster = Cluster(settings)
        served = {pod: (s.variant if s else None) for pod, s in cluster.served_by_ready_pods(flag).items()}
    except Exception as exc:  # the seat's lab is gone or broken: the board says so
        return {"lab": "unreachable", "flag_served": None, "cart_reads": None, "error": _short(exc)}
    cart = None
    reads = getattr(cluster, "cart_reads", None)  # labkit's proof at the consumer, where it has one
    if reads is not None:
        try:
            cart = _cart_text(reads())
        except Exception as exc:
            cart = f"unreadable ({_short(exc)})"
    return {"flag_served": served, "cart_reads": cart}


def _cart_text(read) -> str:
    """'0.1 (10%)', or '0 (TYPE_MISMATCH: its code default)' when flagd's answer was an error."""
    value, variant = getattr(read, "value", read), getattr(read, "variant", None)
    error = getattr(read, "error_code", None)
    if error:
        return f"{value} ({error}: its code default)"
    return f"{value} ({variant})" if variant else str(value)


def _problem(settings: Settings, service: str) -> dict:
    from labkit.dynatrace import Dynatrace

    dt = Dynatrace(settings)
    try:
        frame = dt.problems(service, since="now-6h")
    except Exception as exc:
        return {"problem": f"unreadable ({_short(exc)})"}
    finally:
        dt.close()
    if not len(frame):
        return {"problem": "none"}
    statuses = [str(s).lower() for s in frame["status"]]
    return {"problem": "open" if "open" in statuses else "closed", "problems": len(frame)}
