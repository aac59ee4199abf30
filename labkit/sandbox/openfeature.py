"""The local cart's OpenFeature client: `new FlagdProvider()` (RPC mode, no cache) and TraceEnricherHook.

The demo's cart asks flagd on every EmptyCart, with no evaluation context and no cache, a typed read
whose type is the release's (flagd-consumers.md §1.1): 3.0.0 `GetDoubleValueAsync("cartFailure", 0)`
as `flagd.evaluation.v2.Service/ResolveFloat`; 2.2.0 `GetBooleanValueAsync("cartFailure", false)` as
`flagd.evaluation.v1.Service/ResolveBoolean`. Any error (flagd down, NotFound, InvalidArgument for a
TYPE_MISMATCH) gives the code default, and the hook writes a `feature_flag.evaluation` span event
with what the cart concluded (§2.1).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from labkit.releases import FLAG, Release

PROVIDER = "flagd Provider"  # FlagdProvider.cs: feature_flag.provider.name
EVENT = "feature_flag.evaluation"  # EvaluationEventBuilder.cs
# RpcResolver.cs GetOFException: gRPC status -> OpenFeature ErrorType, lowercased as the hook writes it
ERROR_TYPES = {"NOT_FOUND": "flagnotfound", "UNAVAILABLE": "providernotready",
               "INVALID_ARGUMENT": "typemismatch", "DATA_LOSS": "parseerror"}
# flagd's error codes (C1's Resolution.error_code) as the gRPC status flagd answers them with
CODE_STATUS = {"FLAG_NOT_FOUND": "NOT_FOUND", "TYPE_MISMATCH": "INVALID_ARGUMENT",
               "PARSE_ERROR": "DATA_LOSS", "GENERAL": "UNKNOWN"}
RPC_TIMEOUT = 2.0  # s; the real cart sets no deadline, the local lab must never hang a request on it


@dataclass
class Evaluation:
    """What the cart's `Get…ValueAsync` returned: the value it acts on and how it got it."""
    key: str
    value: object
    variant: str | None
    reason: str  # as flagd or the SDK said it (STATIC, ERROR, ...)
    error_type: str | None = None  # lowercased OpenFeature ErrorType, None on success
    error_message: str | None = None
    metadata: dict = field(default_factory=dict)

    def event(self) -> dict:
        """The attributes TraceEnricherHook writes; null ones are dropped as OTel .NET drops them."""
        attrs = {"feature_flag.key": self.key, "feature_flag.provider.name": PROVIDER,
                 "feature_flag.result.reason": (self.reason or "UNKNOWN").lower(),
                 "feature_flag.result.variant": self.variant, "feature_flag.result.value": self.value}
        for name, meta in (("feature_flag.context.id", "contextId"), ("feature_flag.set.id", "flagSetId"),
                           ("feature_flag.version", "version")):
            if isinstance(self.metadata.get(meta), str):
                attrs[name] = self.metadata[meta]
        if self.error_type:
            attrs["error.type"] = self.error_type
            attrs["error.message"] = self.error_message
        return {k: v for k, v in attrs.items() if v is not None}


class FlagdError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class CartFlagClient:
    """One release's cart asking the local lab's flagd for `cartFailure`, over 8013 like the real one."""

    def __init__(self, cluster, release: Release):
        self.cluster, self.release = cluster, release
        self._channels: dict = {}  # address -> grpc channel (the connection; no flag values cached)
        self._lock = threading.Lock()

    def evaluate(self, key: str = FLAG) -> Evaluation:
        """`Get…ValueAsync(key, default)`: flagd's typed answer, or the code default on any error."""
        default = self.release.cart_default
        try:
            value, variant, reason, metadata = self._resolve(key)
        except FlagdError as exc:
            return Evaluation(key, self._typed(default), None, "ERROR",
                              ERROR_TYPES.get(exc.status, "general"), exc.message)
        if not variant and reason in ("DEFAULT", "DISABLED"):  # RpcResolver: no variant -> code default
            value = default
        return Evaluation(key, self._typed(value), variant or None, reason, metadata=metadata)

    def _typed(self, value):
        """The value as the cart's C# type holds it: a double (0.0, 1.0) or a bool."""
        return float(value) if self.release.cart_kind == "float" else bool(value)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    # ---- the one call to flagd ------------------------------------------------------------------
    def _resolve(self, key: str) -> tuple[object, str, str, dict]:
        """(value, variant, reason, metadata) from flagd's port 8013; FlagdError as its gRPC status."""
        rpc_address = getattr(self.cluster, "flagd_rpc_address", None)
        if rpc_address is not None:
            return self._grpc(rpc_address(), key)
        return self._in_pod(key)

    def _in_pod(self, key: str):
        """Until flagd's 8013 is served (branch i17-flagd): C1's typed resolution of the Service's pod."""
        flags = self.cluster.flagd_flags()
        if flags is None:
            raise FlagdError("UNAVAILABLE", "failed to connect to all addresses; flagd:8013: connection refused")
        if not hasattr(flags, "resolve"):
            return self._ofrep_typed(flags, key)
        r = flags.resolve(key, self.release.cart_kind)
        if r.error_code:
            raise FlagdError(CODE_STATUS.get(r.error_code, "UNKNOWN"), r.message or r.error_code)
        return r.value, r.variant, r.reason, dict(r.metadata or {})

    def _ofrep_typed(self, flags, key: str):
        """Until C1 lands: the pod's OFREP answer with flagd's resolve[T] type check on the variant."""
        status, body = flags.evaluate(key)
        if status == 404:
            raise FlagdError("NOT_FOUND", f"flag: {key} not found")
        if status != 200:
            raise FlagdError(CODE_STATUS.get(body.get("errorCode"), "UNKNOWN"), body.get("errorDetails", ""))
        if "value" in body and not self.release.reads_kind(body["value"]):
            raise FlagdError("INVALID_ARGUMENT", f"TYPE_MISMATCH: flag {key} is not of the type read")
        return body.get("value"), body.get("variant", ""), body.get("reason", ""), body.get("metadata") or {}

    def _grpc(self, address, key: str):
        import grpc
        from google.protobuf.json_format import MessageToDict

        if address is None:  # no Ready pod behind the Service: nothing answers on 8013
            raise FlagdError("UNAVAILABLE", "failed to connect to all addresses; flagd:8013: connection refused")
        pb2, stub = self._stub(address)
        method = self.release.cart_method.rsplit("/", 1)[1]  # ResolveFloat / ResolveBoolean
        request = getattr(pb2, method + "Request")(flag_key=key)  # no context: the cart sends none
        try:
            resp = getattr(stub, method)(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise FlagdError(exc.code().name, exc.details() or exc.code().name) from None
        return resp.value, resp.variant, resp.reason, MessageToDict(resp.metadata)

    def _stub(self, address):
        import grpc

        version = "v2" if ".v2." in self.release.cart_method else "v1"
        if version == "v2":
            from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as pb2
            from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as pb2_grpc
        else:
            from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as pb2
            from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as pb2_grpc
        host, port = address
        with self._lock:
            channel = self._channels.get((host, port))
            if channel is None:  # another pod now: its connection only (the old pod's is gone)
                for old in self._channels.values():
                    old.close()
                self._channels = {(host, port): grpc.insecure_channel(f"{host}:{port}")}
                channel = self._channels[(host, port)]
        return pb2, pb2_grpc.ServiceStub(channel)
