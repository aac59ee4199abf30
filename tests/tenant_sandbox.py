"""The local lab's Dynatrace tenant and the demo shop on loopback, with an httpx client per token: the
one harness for the tenant by itself (conftest's `tenant_sandbox` fixture makes them)."""
from __future__ import annotations

import httpx

from kube_sandbox import release_flags_yaml
from labkit import releases
from labkit.sandbox import Timings, kube, make_token, support_info
from labkit.sandbox.dynatrace import (DEFAULT_CLUSTER, LAB_INGEST_SCOPES, READ_AND_INGEST_SCOPES, Collector,
                                      Telemetry, Tenant, seed)
from labkit.sandbox.dynatrace import app as tenant_app
from labkit.sandbox.http import LabServer
from labkit.sandbox.shop import DemoShop
from labkit.sandbox.shop import app as shop_app

QUERY = "/platform/storage/query/v1/"


class TenantSandbox:
    """Telemetry + shop + tenant on loopback, with clients for each token. The shop's cart is demo
    3.0.0's, asking a flagd (a cluster without the demo's other workloads) that serves
    cartFailure = 100%: every EmptyCart fails, and no traffic runs unless a test sends it. The shop
    writes through the lab's collector (the cart pod's name and annotations on its logs); the tenant
    is set up as getting-started leaves it unless `bare` (then the cart's annotation is the lab file's)."""

    def __init__(self, bare: bool = False, **timing_overrides):
        self.timings = Timings.fast()
        self.timings.shopper_rate = 0
        for key, value in timing_overrides.items():
            setattr(self.timings, key, value)
        self.telemetry = Telemetry(self.timings, seed=3)
        self.api_token, self.ingest_token = make_token(), make_token()
        self.platform_token = make_token("dt0s16")
        self.tenant = Tenant(self.telemetry, self.timings, {
            self.api_token: READ_AND_INGEST_SCOPES, self.ingest_token: LAB_INGEST_SCOPES},
            platform_tokens={self.platform_token})
        self.tenant_server = LabServer(tenant_app(self.tenant)).start()
        info = None if bare else support_info(self.tenant_server.url, seed.set_up(self.tenant))
        self.cluster = kube.LocalCluster(self.timings, release_flags_yaml("3.0.0", "100%"),
                                         support_info=info).start()
        self.collector = Collector(self.telemetry, DEFAULT_CLUSTER, self.cluster)
        self.shop = DemoShop(self.cluster, self.collector, self.timings, releases.get("3.0.0"), seed=5)
        self.shop_server = LabServer(shop_app(self.shop)).start()
        self.tenant.start()
        url = self.tenant_server.url
        self.api = httpx.Client(base_url=url, timeout=10,
                                headers={"Authorization": f"Api-Token {self.api_token}"})
        self.ingest = httpx.Client(base_url=url, timeout=10,
                                   headers={"Authorization": f"Api-Token {self.ingest_token}"})
        self.grail = httpx.Client(base_url=url, timeout=10,
                                  headers={"Authorization": f"Bearer {self.platform_token}"})
        self.front = httpx.Client(base_url=self.shop_server.url, timeout=10)

    def fail_empties(self, n: int) -> None:
        """Attendee traffic with the flag at 100 %: add -> view -> DELETE, n times."""
        for i in range(n):
            self.front.post("/api/cart", json={"userId": f"u{i}",
                                               "item": {"productId": "OLJCESPC7Z", "quantity": 1}})
            self.front.get("/api/cart", params={"sessionId": f"u{i}"})
            assert self.front.request("DELETE", "/api/cart", json={"userId": f"u{i}"}
                                      ).status_code == 500

    def dql(self, query: str, **body):
        resp = self.grail.post(QUERY + "query:execute", json={"query": query, **body})
        assert resp.status_code == 200, resp.text
        return resp.json()["result"]

    def close(self):
        for client in (self.api, self.ingest, self.grail, self.front):
            client.close()
        self.tenant.stop()
        self.tenant_server.stop()
        self.shop_server.stop()
        self.shop.stop()
        self.cluster.stop()
