"""The local lab's Kubernetes API server: namespace `default` with flagd, its ConfigMap and services.

`kubectl` (1.32) and the python `kubernetes` client drive it unchanged over http://127.0.0.1; the
shapes follow /work/shared/reference/kubernetes-api-surface.md. Models: `store` (objects, verbs,
watch), `controllers` (LocalCluster: the kubelet, events, logs), `replicasets` (Deployment and
ReplicaSet controllers), `endpoints`, `logs`, `events`, `patch`, `selectors`, `validation`, `seed`
and `workloads` (the demo's components); HTTP: `routes` (the route table; `app(cluster)` for
LabServer), `auth`, `portforward` over `spdy`, `protobuf`, `printers` (Tables), `discovery`,
`errors` (Status bodies). A flagd pod's own answers live in labkit.sandbox.flagd.
"""
from labkit.sandbox.kube.controllers import LocalCluster
from labkit.sandbox.kube.errors import StatusError
from labkit.sandbox.kube.routes import app

__all__ = ["LocalCluster", "StatusError", "app"]
