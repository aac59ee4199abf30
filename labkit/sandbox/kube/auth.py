"""Who may call the lab's API server: the kubeconfig's bearer token, `auth can-i`, `auth whoami`, health."""
from __future__ import annotations

from labkit.sandbox.http import Request, Response, json_response
from labkit.sandbox.kube import protobuf
from labkit.sandbox.kube.errors import USER, StatusError, bad_request

HEALTH = ("/healthz", "/livez", "/readyz")
GROUPS = ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
CHECKS = ("ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer",
          "poststarthook/generic-apiserver-start-informers", "poststarthook/start-informers")


def unauthorized(req: Request, token: str, required: bool = False) -> Response | None:
    """401 for credentials that are not the kubeconfig's token, as an apiserver started with
    --anonymous-auth=false answers.

    The local lab serves its API over TLS (`required`): kubectl and the kubernetes client send the
    kubeconfig's token there, and a request without it is refused. client-go never sends a token over
    plain http, so the plain-http API of the tests' harness takes a request with no Authorization
    header as the kubeconfig's user; one with another token or scheme is refused either way."""
    sent = req.headers.get("authorization", "")
    if sent == f"Bearer {token}" or (not sent and not required):
        return None
    return StatusError(401, "Unauthorized", "Unauthorized").response()


def health(cluster, req: Request) -> Response:
    name = req.path.strip("/").split("/")[0]
    if cluster.stopped:
        return Response(500, f"[-]ping failed: reason withheld\n{name} check failed\n", "text/plain; charset=utf-8")
    if "verbose" in req.query:
        lines = "".join(f"[+]{c} ok\n" for c in CHECKS)
        return Response(200, f"{lines}{name} check passed\n", "text/plain; charset=utf-8")
    return Response(200, "ok", "text/plain; charset=utf-8")


def _review(req: Request, kind: str) -> dict:
    try:
        if req.headers.get("content-type", "").startswith("application/vnd.kubernetes.protobuf"):
            return protobuf.decode(req.body)
        body = req.json()
    except ValueError:
        raise bad_request("the body of the request could not be decoded") from None
    if not isinstance(body, dict):
        raise bad_request(f"the body of the request must be a {kind}")
    return body


def access_review(cluster, req: Request) -> Response:
    """SelfSubjectAccessReview (`kubectl auth can-i`): allowed unless a test forbade the verb."""
    body = _review(req, "SelfSubjectAccessReview")
    spec = body.get("spec") or {}
    attrs = spec.get("resourceAttributes")
    allowed, reason = True, "the local lab lets its one user do what the lab needs"
    if attrs:
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        try:
            cluster.check(attrs.get("verb", ""), resource, attrs.get("name") or None)
        except StatusError:
            allowed, reason = False, ""
    status = {"allowed": allowed}
    if reason and allowed:
        status["reason"] = reason
    return json_response({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                          "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}, 201)


def rules_review(cluster, req: Request) -> Response:
    """SelfSubjectRulesReview (`kubectl auth can-i --list`)."""
    body = _review(req, "SelfSubjectRulesReview")
    return json_response({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                          "metadata": {"creationTimestamp": None}, "spec": body.get("spec") or {},
                          "status": {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                                     "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                                     "incomplete": False}}, 201)


def self_review(cluster, req: Request) -> Response:
    """SelfSubjectReview (`kubectl auth whoami`)."""
    _review(req, "SelfSubjectReview")
    return json_response({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                          "metadata": {"creationTimestamp": None},
                          "status": {"userInfo": {"username": USER, "uid": "5b6c5a0e-labkit-local",
                                                  "groups": GROUPS}}}, 201)
