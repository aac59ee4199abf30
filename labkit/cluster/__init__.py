"""Kubernetes verbs in the lab's words: the flag file, set a default variant, restart flagd, served values.

A `Cluster` object speaks the lab's words; each verb is a few lines over the module of its subject (as
labkit.dynatrace composes one module per API): `flag_file` (ConfigMap flagd-config read, and changed
under its resourceVersion), `restart` (scale or rollout restart, proved by a pod watch; flagd never
left at 0), `served` (what flagd serves over OFREP, and the wait until every pod serves it),
`cart_reads` (the demo release, what its cart reads, the fix of the flag's types) and `pods` (listed,
Ready, watched), which the others share.

Requests and watches go through labkit._kube (the real `kubernetes` client). Waits are Kubernetes
watches bounded by a timeout; flagd is never left scaled to 0 by an error or an interrupt.
"""
from __future__ import annotations

from functools import partial

from labkit import cart
from labkit import settings as names
from labkit._kube import LOCAL_LAB_HINT, Kube, connect
from labkit.cart import CartRead
from labkit.cluster import cart_reads as _cart_reads
from labkit.cluster.flag_file import FlagConfigMap
from labkit.cluster.pods import flagd_pods
from labkit.cluster.restart import DEFAULT_RESTART, RESTARTS, RestartResult, restart_flagd
from labkit.cluster.served import Served, Serving
from labkit.flags import FlagChange, FlagFile
from labkit.progress import Progress
from labkit.releases import Release
from labkit.settings import Settings

__all__ = ["DEFAULT_RESTART", "LOCAL_LAB_HINT", "RESTARTS", "Cluster", "Progress", "RestartResult", "Served"]


class Cluster:
    """The lab's Kubernetes cluster: the flag ConfigMap, the flagd Deployment and its pods."""

    def __init__(self, settings: Settings | None = None, api_client=None):
        self.settings = settings or Settings.load()
        self.namespace = self.settings.namespace
        self.api = api_client if api_client is not None else connect(self.settings.kubeconfig)
        self.kube = Kube(self.api, self.namespace)
        self._config = FlagConfigMap(self.kube)
        self._serving = Serving(self.kube, self.flag_file)

    @property
    def host(self) -> str:
        return self.kube.host

    @property
    def conflicts(self) -> int:
        """409s retried by the last set_default_variant (for display and tests)."""
        return self._config.conflicts

    # ---- the flag ConfigMap -------------------------------------------------------------------
    def flag_file(self) -> FlagFile:
        """The live flag file from ConfigMap flagd-config (what flagd loads when a pod starts)."""
        return self._config.flag_file()

    def set_default_variant(self, flag: str, variant: str, dry_run: bool = False) -> FlagChange:
        """Change one flag's defaultVariant in the live ConfigMap, guarded by resourceVersion.

        A 409 (someone else wrote in between) re-reads and re-applies this one change on the fresh
        data, so their edit survives. Malformed live JSON is refused before anything is written.
        """
        return self._config.set_default_variant(flag, variant, dry_run)

    # ---- flagd pods and restarts --------------------------------------------------------------
    def flagd_pods(self) -> list[dict]:
        """flagd's pods for display: name, phase, ready, age (s), terminating."""
        return flagd_pods(self.kube)

    def restart_flagd(self, timeout: float = 120, progress: Progress | None = None,
                      how: str = "scale") -> RestartResult:
        """Restart flagd so it loads the ConfigMap again; return when the new pods are Ready.

        how="scale" is the lab page's way: scale to 0, wait until flagd's pods are gone, scale back to
        the previous count, wait until that many pods are Ready (flagd answers nothing meanwhile).
        how="rollout" is `kubectl rollout restart`: new pods start beside the old ones, which go only
        once the new ones are Ready. Bounded by `timeout` (LabTimeout); flagd always ends at its
        previous replica count. (The workshop's steps default to DEFAULT_RESTART.)
        """
        return restart_flagd(self.kube, timeout, progress, how)

    # ---- what flagd serves ----------------------------------------------------------------------
    def served_values(self, context: dict | None = None) -> dict[str, Served]:
        """Everything flagd serves in `context` (e.g. {"targetingKey": "u1"}), by flag key (OFREP bulk
        evaluation; one request). No context: what a request without one gets."""
        return self._serving.values(context)

    def served_value(self, flag: str, context: dict | None = None) -> Served:
        """Ask flagd over OFREP (through the API server's service proxy) what it serves for `flag` in
        `context` (targetingKey inside it); a flag with targeting may serve each context differently."""
        return self._serving.value(flag, context)

    def served_by_pod(self, pod: str, flag: str) -> Served | None:
        """Ask ONE flagd pod, through the API server's pod proxy, what it serves for `flag` (OFREP).

        None while that pod does not answer (starting, going, or gone). The service proxy answers
        from one pod of its choosing; this is how each pod is asked."""
        return self._serving.by_pod(pod, flag)

    def served_by_ready_pods(self, flag: str) -> dict[str, Served | None]:
        """What each Ready flagd pod serves for `flag`, by pod name ({} while no pod is Ready).

        Without RBAC for pods/proxy, the service's one answer stands in for them all."""
        return self._serving.by_ready_pods(flag)

    def serving_everywhere(self, flag: str, variant: str) -> Served | None:
        """What flagd serves when every Ready pod serves `variant` for `flag`, else None."""
        return self._serving.everywhere(flag, variant)

    def wait_served(self, flag: str, variant: str, timeout: float = 30,
                    progress: Progress | None = None) -> Served:
        """Return once EVERY Ready flagd pod serves `variant` for `flag`, each pod asked itself.

        OFREP has no watch: a few bounded retries. When the ConfigMap no longer says `variant`
        (someone changed the flag after us), their change wins: LabError, never a stale success."""
        return self._serving.wait(flag, variant, timeout, progress)

    # ---- what the cart reads --------------------------------------------------------------------
    def demo_release(self, flag: str = names.FLAG, variants: dict | None = None) -> tuple[Release, str]:
        """(the demo release the lab runs, how that is known): from the cart Deployment's image, else
        from `flag`'s variant types (numbers: a cart that reads a float; booleans: one that reads a
        boolean), else labkit's default release."""
        return _cart_reads.demo_release(self.kube, flag, variants)

    def cart_reads(self, flag: str = names.FLAG) -> CartRead:
        """Ask flagd AS THE DEMO'S CART ASKS: its release's typed call (3.0.0: ResolveFloat) on flagd:8013
        with no context, Connect JSON through the API server's service proxy; say what the cart reads
        (its code default on any error: TYPE_MISMATCH, FLAG_NOT_FOUND, no flagd pod Ready)."""
        return _cart_reads.cart_reads(self._config, flag)

    def fix_flag_types(self, flag: str = names.FLAG, release: Release | str | None = None,
                       dry_run: bool = False) -> cart.FlagFix:
        """Give `flag` the demo release's own variants (Release.flag()), so its cart can read it: every
        other flag and field kept, the default mapped (a true/positive default -> the release's
        `lab_on_variant`, else `off`). The flag as it was is kept in a ConfigMap annotation for
        undo(). flagd loads it only when its pod starts: restart flagd after."""
        return _cart_reads.fix_flag_types(self._config, flag, release, dry_run,
                                          undo=partial(self.undo_flag_fix, flag))

    def undo_flag_fix(self, flag: str = names.FLAG) -> cart.FlagFix:
        """Put `flag` back as it was before fix_flag_types() (kept in the ConfigMap's annotation)."""
        return _cart_reads.undo_flag_fix(self._config, flag, fix_again=partial(self.fix_flag_types, flag))
