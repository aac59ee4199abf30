"""The demo's other components, as the OpenTelemetry demo chart names, labels and starts them.

Each is a Deployment of one pod with the chart's labels (`opentelemetry.io/name=<component>`) and,
when it listens, a Service of the same name whose selector matches its pods. They only start and
log; the shop behind frontend-proxy and flagd are the parts that answer.
"""
from __future__ import annotations

import time

from labkit import releases
from labkit.sandbox.kube.discovery import NS

IMAGE = "ghcr.io/open-telemetry/demo:{version}-{name}"  # the release's tag: labkit reads it off the cart

# name -> (ports it listens on, memory limit, the lines it logs when it starts)
COMPONENTS: dict[str, tuple[list[tuple[str, int]], str, list[str]]] = {
    "accounting": ([], "120Mi", ["info: Accounting.Consumer[0] Accounting service started",
                                 "info: Accounting.Consumer[0] Subscribed to topic orders"]),
    "ad": ([("tcp-service", 8080)], "300Mi", ["Ad service starting.", "Ad service started, listening on 8080"]),
    "cart": ([("tcp-service", 8080)], "160Mi", [
        "info: Microsoft.Hosting.Lifetime[14]\n      Now listening on: http://[::]:8080",
        "info: Microsoft.Hosting.Lifetime[0]\n      Application started. Press Ctrl+C to shut down.",
        "info: cart.cartstore.ValkeyCartStore[0]\n      Successfully connected to Redis"]),
    "checkout": ([("tcp-service", 8080)], "20Mi", ['{"level":"info","msg":"service config loaded"}',
                                                  '{"level":"info","msg":"starting to listen on tcp: \\"[::]:8080\\""}']),
    "currency": ([("tcp-service", 8080)], "20Mi", ["Currency Server listening on port: 8080"]),
    "email": ([("tcp-service", 8080)], "100Mi", ["Puma starting in single mode...",
                                                 "* Listening on http://0.0.0.0:8080", "Use Ctrl-C to stop"]),
    "fraud-detection": ([], "300Mi", ["Consumer subscribed to topic: orders"]),
    "frontend": ([("tcp-service", 8080)], "250Mi", ["  ▲ Next.js 15.2.1", "  - Local:        http://localhost:8080",
                                                    " ✓ Ready in 412ms"]),
    "frontend-proxy": ([("tcp-service", 8080)], "65Mi", [
        "[info][main] [source/server/server.cc:432] initializing epoch 0 (base id=0, hot restart version=11.104)",
        "[info][main] [source/server/server.cc:1010] starting main dispatch loop"]),
    "image-provider": ([("tcp-service", 8081)], "50Mi", ["nginx: [notice] start worker processes"]),
    "kafka": ([("plaintext", 9092), ("controller", 9093)], "600Mi", [
        "[KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)"]),
    "load-generator": ([("tcp-service", 8089)], "1500Mi", [
        "load-generator/INFO/locust.main: Starting web interface at http://0.0.0.0:8089",
        "load-generator/INFO/locust.main: Starting Locust 2.32.4",
        "load-generator/INFO/locust.runners: Ramping to 10 users at a rate of 1.00 per second"]),
    "payment": ([("tcp-service", 8080)], "120Mi", ['{"level":30,"msg":"payment gRPC server started on port 8080"}']),
    "product-catalog": ([("tcp-service", 8080)], "20Mi", ['{"level":"info","msg":"Loaded 10 products"}',
                                                         '{"level":"info","msg":"Product Catalog gRPC server started on port: 8080"}']),
    "quote": ([("tcp-service", 8080)], "40Mi", ["[php] Slim Application started on 0.0.0.0:8080"]),
    "recommendation": ([("tcp-service", 8080)], "500Mi", ["Recommendation service started on port 8080"]),
    "shipping": ([("tcp-service", 8080)], "20Mi", ["shipping service listening on 0.0.0.0:8080"]),
    "valkey-cart": ([("valkey", 6379)], "20Mi", ["* Valkey version=8.0.2, bits=64, commit=00000000, modified=0",
                                                 "* Ready to accept connections tcp"]),
}
# what a running container keeps writing (the load generator and the proxy's access log), every few s
CHATTER = {
    "load-generator": "load-generator/INFO/locust: GET /api/products 200 ({ms} ms)",
    "frontend-proxy": '[{stamp}] "GET /api/products HTTP/1.1" 200 - 0 2134 {ms} {ms} "-" "python-requests/2.32.3" '
                      '"-" "frontend-proxy:8080" "frontend:8080"',
}
SERVICE_IPS = {name: f"10.96.{100 + i}.{10 + i}" for i, name in enumerate(sorted(COMPONENTS))}

# The lab's otel-demo-values.yaml gives the cart pod these annotations, its supportInfo linking the
# lab author's own runbook document (dead on every other tenant: the id is not substituted).
LAB_SUPPORT_INFO = ("## Cart Service Issues Support Information\n"
                    "If cart service is having issues, please contact the owner\n"
                    "and review the [Ops runbook](https://DT_ENVIRONMENT_ID_PLACEHOLDER.apps.dynatrace.com"
                    "/ui/document/c21c01cb-b4ad-4eae-9279-a3853f38b1de)\n")
CART_ANNOTATIONS = {"ownedBy": "teamA", "product": "otel-demo-app", "costCentre": "centre1",
                    "deployment.release_stage": "production", "supportInfo": LAB_SUPPORT_INFO}


def cart_annotations(support_info: str | None = None) -> dict:
    """The cart's pod annotations; `support_info` as the lab's setup fills it in (None: the file's)."""
    return {**CART_ANNOTATIONS, "supportInfo": support_info or LAB_SUPPORT_INFO}


def image(name: str, version: str = releases.DEFAULT) -> str:
    return "valkey/valkey:8.0.2-alpine" if name == "valkey-cart" else IMAGE.format(version=version, name=name)


def labels(name: str) -> dict:
    return {"opentelemetry.io/name": name, "app.kubernetes.io/name": name, "app.kubernetes.io/component": name}


def template(name: str, version: str = releases.DEFAULT, support_info: str | None = None) -> dict:
    ports, memory, _ = COMPONENTS[name]
    container = {"name": name, "image": image(name, version), "imagePullPolicy": "IfNotPresent",
                 "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
                 "env": [{"name": "OTEL_SERVICE_NAME", "value": name}],
                 "resources": {"limits": {"memory": memory}},
                 "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    metadata = {"labels": labels(name)}
    if name == "cart":
        metadata["annotations"] = cart_annotations(support_info)
    return {"metadata": metadata,
            "spec": {"serviceAccountName": "my-otel-demo", "restartPolicy": "Always",
                     "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                     "schedulerName": "default-scheduler", "securityContext": {}, "containers": [container]}}


def deployment(name: str, tmpl: dict) -> dict:
    """A Deployment as the chart writes it (one replica, the component's selector)."""
    return {
        "metadata": {"name": name, "generation": 1,
                     "labels": dict(labels(name), **{"app.kubernetes.io/part-of": "opentelemetry-demo"}),
                     "annotations": {"meta.helm.sh/release-name": "my-otel-demo",
                                     "meta.helm.sh/release-namespace": NS}},
        "spec": {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                 "selector": {"matchLabels": {"opentelemetry.io/name": name}},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": tmpl},
        "status": {},
    }


def objects(version: str = releases.DEFAULT, support_info: str | None = None) -> list[tuple[str, dict]]:
    """The demo release's Deployments and Services (not flagd's: seed.py has those)."""
    out: list[tuple[str, dict]] = []
    for name, (ports, _, _) in sorted(COMPONENTS.items()):
        out.append(("deployments", deployment(name, template(name, version, support_info))))
        if ports:
            out.append(("services", service(name, ports, SERVICE_IPS[name])))
    return out


def service(name: str, ports: list[tuple[str, int]], ip: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"opentelemetry.io/name": name,
                                              "app.kubernetes.io/name": name}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports],
                 "selector": {"opentelemetry.io/name": name}, "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    }


def start_lines(name: str) -> list[str]:
    return list(COMPONENTS.get(name, ([], "", []))[2])


def chatter(name: str, at: float, ms: int) -> str | None:
    line = CHATTER.get(name)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + ".000Z"
    return line.format(stamp=stamp, ms=ms) if line else None
