"""A real HTTP server on 127.0.0.1 that answers the StatefulSet, scale and Lease endpoints the
way the Kubernetes API server does, for the seam's tests and the end-to-end test.

    GET   /apis/apps/v1/namespaces/{ns}/statefulsets/{name}          -> apps/v1 StatefulSet
    PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}          (spec/metadata; status ignored)
    GET   /apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale    -> autoscaling/v1 Scale
    PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale    (spec.replicas only)
    GET   /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name} -> coordination.k8s.io/v1 Lease
    PATCH /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name} (metadata/spec)

Each object has its own resourceVersion, drawn from one counter as etcd's revision is
(https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions).

Like the API server: PATCH bodies by Content-Type (``application/merge-patch+json``,
``application/strategic-merge-patch+json`` — the same for these fields — and
``application/json-patch+json``; anything else 415); ``metadata.resourceVersion`` in a patch is a
precondition (stale → 409 ``Conflict``); the Scale object carries the StatefulSet's
resourceVersion; a no-op patch keeps the resourceVersion; ``status.readyReplicas`` is omitted
when 0; errors are ``Status`` objects (404 NotFound, 403 Forbidden, 401 Unauthorized, 409, 415,
422 Invalid). Every request is recorded (method, path, query, content type, body, auth).

The "controller" part is the test's: ``on_replicas(old, new)`` is called (in a worker thread)
when ``spec.replicas`` changes, and ``set_ready(n)`` updates ``status.readyReplicas``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
ACCEPTED = (JSON_PATCH, MERGE, STRATEGIC)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    authorization: str | None
    status: int = 0


def status_obj(code: int, reason: str, message: str, name: str | None = None, kind: str = "statefulsets") -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if name is not None:
        out["details"] = {"name": name, "group": "apps", "kind": kind}
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 (add, replace, remove, test) on object paths — enough for these objects."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for p in parts[:-1]:
            parent = parent.setdefault(p, {}) if op["op"] == "add" else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace" and last not in parent:
                raise KeyError(op["path"])
            parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[last]
        elif op["op"] == "test":
            if parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


class FakeAPIServer:
    def __init__(self, namespace: str = "vllm-dev", name: str = "vllm", *, replicas: int = 1, ready: int | None = None,
                 annotations: dict[str, str] | None = None, token: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.token = token
        self.ssl_context = ssl_context
        self._rv = 4711
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[Recorded] = []
        self.forbid: set[tuple[str, str]] = set()  # (verb, resource) the service account may not do
        self.conflict_next = 0  # a concurrent writer touches the object before the next N preconditioned patches
        self.conflict_annotations: dict[str, str] | None = None  # what that writer writes (default: an unrelated key)
        self.on_replicas: Callable[[int, int], None] | None = None
        self.lock = threading.Lock()
        self._hooks = ThreadPoolExecutor(max_workers=1)
        self.add(namespace, name, replicas=replicas, ready=replicas if ready is None else ready)
        self.lease_name = f"{name}-activity"
        self.leases: dict[tuple[str, str], dict] = {}
        self.add_lease(namespace, self.lease_name, annotations=annotations)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- the object store ---------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_lease(self, namespace: str, name: str, *, annotations: dict[str, str] | None = None) -> None:
        """The activity Lease as the Pulumi program creates it (the wrapper only patches it)."""
        self.leases[(namespace, name)] = {
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                         "resourceVersion": self._next_rv(), "creationTimestamp": "2026-11-23T12:00:00Z",
                         "labels": {"app.kubernetes.io/name": "vllm-deploy"},
                         "annotations": dict(annotations or {"vllm-deploy/purpose": "activity"})},
            "spec": {},
        }

    def add(self, namespace: str, name: str, *, replicas: int, ready: int, annotations: dict[str, str] | None = None) -> None:
        labels = {"app.kubernetes.io/name": "vllm-deploy", "app.kubernetes.io/component": "vllm"}
        self.objects[(namespace, name)] = {
            "kind": "StatefulSet",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "generation": 1,
                "creationTimestamp": "2026-11-23T12:00:00Z",
                "labels": labels,
                "annotations": dict(annotations or {"checkov.io/skip1": "CKV_K8S_40=root"}),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "serviceName": f"{name}-headless",
                "podManagementPolicy": "Parallel",
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0"}]}},
            },
            "status": {"replicas": replicas, "readyReplicas": ready, "observedGeneration": 1},
        }

    def get(self) -> dict:
        with self.lock:
            return self._render(self.objects[(self.namespace, self.name)])

    @property
    def replicas(self) -> int:
        return int(self.get()["spec"]["replicas"])

    @property
    def annotations(self) -> dict[str, str]:
        """The activity Lease's annotations (where the wrapper writes)."""
        with self.lock:
            return dict(self.leases[(self.namespace, self.lease_name)]["metadata"].get("annotations") or {})

    @property
    def sts_annotations(self) -> dict[str, str]:
        return dict(self.get()["metadata"].get("annotations") or {})

    def set_ready(self, n: int) -> None:
        """The StatefulSet controller's status update (it bumps the resourceVersion)."""
        with self.lock:
            obj = self.objects[(self.namespace, self.name)]
            obj["status"]["readyReplicas"] = n
            obj["status"]["replicas"] = max(n, obj["spec"]["replicas"])
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def touch(self, lease: bool = False) -> None:
        """Another client writes something unrelated (the resourceVersion moves on)."""
        with self.lock:
            obj = self.leases[(self.namespace, self.lease_name)] if lease else self.objects[(self.namespace, self.name)]
            obj["metadata"].setdefault("annotations", {})["someone-else/touched"] = str(self._rv)
            obj["metadata"]["resourceVersion"] = self._next_rv()

    @staticmethod
    def _render(obj: dict) -> dict:
        out = copy.deepcopy(obj)
        if not out["status"].get("readyReplicas"):
            out["status"].pop("readyReplicas", None)  # omitempty, as the real server sends it
        return out

    @staticmethod
    def _scale_of(obj: dict) -> dict:
        m = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                         "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": obj["spec"]["replicas"]},
            "status": {"replicas": obj["status"].get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())},
        }

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method in (None, r.method)]

    # -- HTTP -----------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ctype = request.headers.get("Content-Type")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Recorded(request.method, request.path, dict(request.query), ctype, body, request.headers.get("Authorization"))
        self.requests.append(rec)
        resp = self._dispatch(request, rec)
        rec.status = resp.status
        return resp

    def _json(self, obj: dict, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(obj), status=status, content_type="application/json")

    def _dispatch(self, request: web.Request, rec: Recorded) -> web.Response:
        if self.token is not None and rec.authorization != f"Bearer {self.token}":
            return self._json(status_obj(401, "Unauthorized", "Unauthorized"), 401)
        if request.path.startswith("/apis/coordination.k8s.io/"):
            return self._dispatch_lease(request, rec)
        ns, name = request.match_info["ns"], request.match_info["name"]
        sub = request.match_info.get("sub")
        resource = "statefulsets" + (f"/{sub}" if sub else "")
        if sub not in (None, "scale"):
            return self._json(status_obj(404, "NotFound", "the server could not find the requested resource"), 404)
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update"}.get(request.method)
        if verb is None or verb == "update":
            return self._json(status_obj(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource"), 405)
        if (verb, resource) in self.forbid:
            return self._json(status_obj(
                403, "Forbidden",
                f'statefulsets.apps "{name}" is forbidden: User "system:serviceaccount:{ns}:vllm-scaler" cannot '
                f'{verb} resource "{resource}" in API group "apps" in the namespace "{ns}"',
                name), 403)
        with self.lock:
            obj = self.objects.get((ns, name))
            if obj is None:
                return self._json(status_obj(404, "NotFound", f'statefulsets.apps "{name}" not found', name), 404)
            if verb == "get":
                return self._json(self._scale_of(obj) if sub else self._render(obj))
            return self._patch(obj, sub, rec)

    def _dispatch_lease(self, request: web.Request, rec: Recorded) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update"}.get(request.method)
        if verb not in ("get", "patch"):
            return self._json(status_obj(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"), 405)
        if (verb, "leases") in self.forbid:
            return self._json(status_obj(
                403, "Forbidden",
                f'leases.coordination.k8s.io "{name}" is forbidden: User "system:serviceaccount:{ns}:vllm-scaler" '
                f'cannot {verb} resource "leases" in API group "coordination.k8s.io" in the namespace "{ns}"',
                name, "leases"), 403)
        with self.lock:
            obj = self.leases.get((ns, name))
            if obj is None:
                return self._json(status_obj(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found', name, "leases"), 404)
            if verb == "get":
                return self._json(copy.deepcopy(obj))
            ctype = (rec.content_type or "").split(";")[0].strip()
            if ctype != MERGE or not isinstance(rec.body, dict):
                return self._json(status_obj(415, "UnsupportedMediaType", "this fake takes merge patches of leases only"), 415)
            wanted_rv = (rec.body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and self.conflict_next > 0:
                self.conflict_next -= 1
                obj["metadata"].setdefault("annotations", {}).update(
                    self.conflict_annotations or {"someone-else/touched": str(self._rv)})
                obj["metadata"]["resourceVersion"] = self._next_rv()
            if wanted_rv is not None and str(wanted_rv) != obj["metadata"]["resourceVersion"]:
                return self._json(status_obj(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", name, "leases"), 409)
            patched = merge_patch(obj, rec.body)
            patched["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            if patched != obj:
                patched["metadata"]["resourceVersion"] = self._next_rv()
                obj.clear()
                obj.update(patched)
            return self._json(copy.deepcopy(obj))

    def _patch(self, obj: dict, sub: str | None, rec: Recorded) -> web.Response:
        name = obj["metadata"]["name"]
        ctype = (rec.content_type or "").split(";")[0].strip()
        if ctype not in ACCEPTED:
            return self._json(status_obj(
                415, "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(ACCEPTED)}"), 415)
        current = self._scale_of(obj) if sub else self._render(obj)
        try:
            if ctype == JSON_PATCH:
                if not isinstance(rec.body, list):
                    raise ValueError("json patch must be an array")
                patched = json_patch(current, rec.body)
                wanted_rv = None
            else:
                if not isinstance(rec.body, dict):
                    raise ValueError("patch body must be a JSON object")
                patched = merge_patch(current, rec.body)
                wanted_rv = (rec.body.get("metadata") or {}).get("resourceVersion")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return self._json(status_obj(400, "BadRequest", f"error decoding patch: {exc}"), 400)
        if wanted_rv is not None and self.conflict_next > 0:
            self.conflict_next -= 1
            obj["metadata"].setdefault("annotations", {}).update(
                self.conflict_annotations or {"someone-else/touched": str(self._rv)})
            obj["metadata"]["resourceVersion"] = self._next_rv()
        if wanted_rv is not None and str(wanted_rv) != obj["metadata"]["resourceVersion"]:
            kind = "statefulsets.apps"
            return self._json(status_obj(
                409, "Conflict",
                f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again", name), 409)
        old_replicas = obj["spec"]["replicas"]
        if sub == "scale":
            replicas = (patched.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                return self._json(status_obj(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: '
                                             "Invalid value: must be greater than or equal to 0", name, "Scale"), 422)
            new = copy.deepcopy(obj)
            new["spec"]["replicas"] = replicas
        else:
            new = copy.deepcopy(obj)
            new["metadata"] = {**obj["metadata"], "annotations": patched["metadata"].get("annotations") or {},
                               "labels": patched["metadata"].get("labels") or {}}
            new["spec"] = patched.get("spec", obj["spec"])  # status is a subresource: ignored here
        if new != obj:
            if new["spec"] != obj["spec"]:
                new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            obj.clear()
            obj.update(new)
        if obj["spec"]["replicas"] != old_replicas:
            if obj["spec"]["replicas"] == 0:
                obj["status"]["readyReplicas"] = 0  # pods go away (the test stops the process)
            if self.on_replicas is not None:
                self._hooks.submit(self.on_replicas, old_replicas, obj["spec"]["replicas"])
        return self._json(self._scale_of(obj) if sub else self._render(obj))

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeAPIServer:
        app = web.Application()
        base = "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}"
        app.router.add_route("*", base, self._handle)
        app.router.add_route("*", base + "/{sub}", self._handle)
        app.router.add_route("*", "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}", self._handle)
        started = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-apiserver", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._hooks.shutdown(wait=True)

    def __enter__(self) -> FakeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
