"""The local cart's OpenFeature client: `new FlagdProvider()` (RPC mode, no cache) and TraceEnricherHook.

The demo's cart asks flagd on every EmptyCart, with no evaluation context and no cache, a typed read
whose type is the release's (flagd-consumers.md §1.1): 3.0.0 `GetDoubleValueAsync("cartFailure", 0)`
as `flagd.evaluation.v2.Service/ResolveFloat`; 2.2.0 `GetBooleanValueAsync("cartFailure", false)` as
`flagd.evaluation.v1.Service/ResolveBoolean`. Any error (flagd down, NotFound, InvalidArgument for a
TYPE_MISMATCH) gives the code default, and the hook writes a `feature_flag.evaluation` span event
with what the cart concluded (§2.1).
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field

import grpc
from google.protobuf.json_format import MessageToDict

from labkit.releases import FLAG, Release

PROVIDER = "flagd Provider"  # FlagdProvider.cs: feature_flag.provider.name
EVENT = "feature_flag.evaluation"  # EvaluationEventBuilder.cs
# RpcResolver.cs GetOFException: gRPC status -> OpenFeature ErrorType, lowercased as the hook writes it
ERROR_TYPES = {"NOT_FOUND": "flagnotfound", "UNAVAILABLE": "providernotready",
               "INVALID_ARGUMENT": "typemismatch", "DATA_LOSS": "parseerror"}
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
    grpc_status: int = 0  # how flagd's call ended (0 OK, 3 InvalidArgument, 5 NotFound, 14 Unavailable)

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

    def evaluate(self, key: str = FLAG, traceparent: str | None = None) -> Evaluation:
        """`Get…ValueAsync(key, default)`: flagd's typed answer, or the code default on any error.
        `traceparent`: the W3C context the cart's instrumented gRPC client sends along."""
        default = self.release.cart_default
        try:
            value, variant, reason, metadata = self._resolve(key, traceparent)
        except FlagdError as exc:
            return Evaluation(key, self._typed(default), None, "ERROR", ERROR_TYPES.get(exc.status, "general"),
                              exc.message, grpc_status=grpc.StatusCode[exc.status].value[0])
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
    def _resolve(self, key: str, traceparent: str | None) -> tuple[object, str, str, dict]:
        """(value, variant, reason, metadata) from flagd:8013 over gRPC (the Service's Ready pod, as
        `flagd:8013` resolves); FlagdError with the gRPC status otherwise."""
        address = self.cluster.flagd_rpc_address()
        if address is None:  # no Ready pod behind the Service: nothing answers on 8013
            raise FlagdError("UNAVAILABLE", "failed to connect to all addresses; flagd:8013: connection refused")
        package, method = self.release.cart_method.rsplit(".Service/", 1)  # flagd.evaluation.v2, ResolveFloat
        pb2 = importlib.import_module(f"openfeature.schemas.protobuf.{package}.evaluation_pb2")
        grpc_pb2 = importlib.import_module(f"openfeature.schemas.protobuf.{package}.evaluation_pb2_grpc")
        call = getattr(grpc_pb2.ServiceStub(self._channel(address)), method)
        request = getattr(pb2, method + "Request")(flag_key=key)  # no evaluation context: the cart sends none
        try:
            resp = call(request, timeout=RPC_TIMEOUT,
                        metadata=(("traceparent", traceparent),) if traceparent else None)
        except grpc.RpcError as exc:
            raise FlagdError(exc.code().name, exc.details() or exc.code().name) from None
        return resp.value, resp.variant, resp.reason, MessageToDict(resp.metadata)

    def _channel(self, address: tuple[str, int]):
        """The connection to flagd's pod at `address`; another pod now: a new one, the old closed."""
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                for old in self._channels.values():
                    old.close()
                channel = grpc.insecure_channel(f"{address[0]}:{address[1]}")
                self._channels = {address: channel}
            return channel
