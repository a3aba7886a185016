"""Krake 1.0.1's own Python client against a krake-rs API server.

    python suite.py --url http://127.0.0.1:8080 [--label embedded] [--kind Cluster ...]

For every kind of Krake's four APIs (core, kubernetes, infrastructure,
openstack) this creates objects built from Krake's data classes, reads,
lists (and lists across namespaces), updates (a spec and a label change),
runs every subresource operation the client has for the kind (plus the
application's /retry, which the client lacks, over plain HTTP), deletes
(deletion in progress while finalizers exist, gone once they are removed)
and watches one object from ADDED through MODIFIED to DELETED, with
``krake.client`` exactly as Krake's controllers and krakectl use it. What is
compared are the values Krake's deserialization returns (datetimes, enums,
status defaults), not just that nothing raised.

The server must run without controllers (nothing else may change the
objects), with authorization always-allow (the default). Prints one line per
failed check, one line per kind, and a summary line; exits 1 when a check
failed, 2 when the server cannot be reached.
"""

import argparse
import asyncio
import copy
import json
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

from aiohttp import ClientResponseError

from krake.client import Client
from krake.client.core import CoreApi
from krake.client.infrastructure import InfrastructureApi
from krake.client.kubernetes import KubernetesApi
from krake.client.openstack import OpenStackApi
from krake.data.core import (
    KafkaSpec,
    MetricsProviderSpec,
    PrometheusSpec,
    Reason,
    ReasonCode,
    ResourceRef,
    WatchEventType,
)
from krake.data.infrastructure import CloudBinding, CloudState
from krake.data.kubernetes import (
    ApplicationComplete,
    ApplicationShutdown,
    ApplicationState,
    ClusterBinding,
    ClusterNode,
    ClusterNodeCondition,
    ClusterNodeMetadata,
    ClusterNodeStatus,
    ClusterState,
)
from krake.data.openstack import MagnumClusterBinding, MagnumClusterState, ProjectState

import objects

NS_A = "compat-a"
NS_B = "compat-b"
WATCH_TIMEOUT = 15.0


class CheckFailed(Exception):
    """A check that makes the rest of a kind's flow meaningless."""


class Checks:
    """Counts checks; records failures with the kind they belong to."""

    def __init__(self):
        self.passed = 0
        self.failures = []
        self.kind = "-"

    def check(self, condition, message):
        if condition:
            self.passed += 1
            return True
        self.failures.append((self.kind, message))
        print(f"FAIL [{self.kind}] {message}", flush=True)
        return False

    def require(self, condition, message):
        if not self.check(condition, message):
            raise CheckFailed(message)

    def equal(self, actual, expected, what):
        return self.check(
            actual == expected, f"{what}: expected {expected!r}, got {actual!r}"
        )

    async def refused(self, coroutine, status, what):
        """The request fails with HTTP `status`."""
        try:
            result = await coroutine
        except ClientResponseError as err:
            return self.check(
                err.status == status,
                f"{what}: expected HTTP {status}, got {err.status} ({err.message})",
            )
        return self.check(
            False, f"{what}: expected HTTP {status}, but it succeeded: {short(result)}"
        )


def short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def serialized(obj):
    return json.loads(json.dumps(obj.serialize()))


def is_utc_datetime(value):
    return (
        isinstance(value, datetime)
        and value.tzinfo is not None
        and value.utcoffset() == timedelta(0)
    )


def recent(value):
    now = datetime.now(timezone.utc)
    return is_utc_datetime(value) and abs(now - value) < timedelta(minutes=5)


def raw_request(base, method, path, body=None):
    """(status, content type, parsed JSON or text) of a plain HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, ctype, text = (
                response.status,
                response.headers.get("Content-Type", ""),
                response.read().decode(),
            )
    except urllib.error.HTTPError as err:
        status, ctype, text = err.code, err.headers.get("Content-Type", ""), err.read().decode()
    try:
        return status, ctype, json.loads(text)
    except ValueError:
        return status, ctype, text


async def raw(base, method, path, body=None):
    loop = asyncio.get_event_loop()
    return await loop.run_in_executor(None, raw_request, base, method, path, body)


async def problem(c, base, method, path, body, status, title, detail, what):
    """A plain request that must fail with Krake's RFC 7807 body."""
    got, ctype, answer = await raw(base, method, path, body)
    c.equal(got, status, f"{what}: HTTP status")
    c.check(
        ctype.startswith("application/problem+json"),
        f"{what}: Content-Type is application/problem+json, got {ctype!r}",
    )
    if not c.check(isinstance(answer, dict), f"{what}: a JSON object body: {answer!r}"):
        return
    c.equal(answer.get("status"), status, f"{what}: problem status")
    if title is None:
        c.equal(answer.get("type"), "about:blank", f"{what}: problem type")
        c.check("title" not in answer, f"{what}: no problem title: {answer!r}")
    else:
        c.equal(answer.get("title"), title, f"{what}: problem title")
    if detail is not None:
        c.check(
            isinstance(answer.get("detail"), str) and detail in answer["detail"],
            f"{what}: problem detail contains {detail!r}: {answer.get('detail')!r}",
        )


TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$")


def missing_keys(krake, ours, path=""):
    """Keys Krake's serialization has that our JSON lacks (recursively)."""
    missing = []
    if isinstance(krake, dict) and isinstance(ours, dict):
        for key, value in krake.items():
            where = f"{path}.{key}" if path else key
            if key not in ours:
                missing.append(where)
            else:
                missing += missing_keys(value, ours[key], where)
    elif isinstance(krake, list) and isinstance(ours, list):
        for i, (a, b) in enumerate(zip(krake, ours)):
            missing += missing_keys(a, b, f"{path}.{i}")
    return missing


async def wire_checks(c, base, kind, path, cls):
    """The raw JSON of a read: content type, timestamp format, every field Krake writes."""
    status, ctype, answer = await raw(base, "GET", path)
    c.equal(status, 200, f"GET {path}")
    c.check(ctype.startswith("application/json"), f"read Content-Type: {ctype!r}")
    if not isinstance(answer, dict):
        return
    for field in ("created", "modified"):
        value = answer["metadata"].get(field)
        c.check(
            isinstance(value, str) and TIMESTAMP.match(value),
            f"metadata.{field} is written as Krake writes datetimes "
            f"(2023-02-24T10:00:00.123456+00:00): {value!r}",
        )
    krake = serialized(cls.deserialize(answer))
    c.equal(missing_keys(krake, answer), [], "fields Krake writes that the server left out")


class Kind:
    """One of Krake's kinds and how its client methods are called."""

    def __init__(
        self,
        api_class,
        kind,
        singular,
        plural,
        namespaced,
        build,
        change_spec,
        status_default=None,
        subresources=None,
        core_style_list=False,
    ):
        self.api_class = api_class
        self.kind = kind
        self.singular = singular
        self.plural = plural
        self.namespaced = namespaced
        self.build = build
        self.change_spec = change_spec
        self.status_default = status_default
        self.subresources = subresources
        # Core's namespaced kinds have no list_all_*/watch_all_*: their
        # list_*/watch_* use the all-namespaces URL when namespace is None.
        self.core_style_list = core_style_list

    def path(self, namespace, name=None):
        """The object's (or, without a name, the collection's) URL path."""
        api = self.api_class.__name__[: -len("Api")].lower()
        plural = self.kind.lower() + "s"
        head = f"/{api}/namespaces/{namespace}" if self.namespaced else f"/{api}"
        return f"{head}/{plural}" + (f"/{name}" if name else "")

    def method(self, api, verb, plural=False):
        return getattr(api, f"{verb}_{self.plural if plural else self.singular}")

    def ns(self, namespace):
        return {"namespace": namespace} if self.namespaced else {}

    async def create(self, api, body, namespace):
        return await self.method(api, "create")(body=body, **self.ns(namespace))

    async def read(self, api, name, namespace):
        return await self.method(api, "read")(name=name, **self.ns(namespace))

    async def update(self, api, body, namespace):
        return await self.method(api, "update")(
            body=body, name=body.metadata.name, **self.ns(namespace)
        )

    async def delete(self, api, name, namespace):
        return await self.method(api, "delete")(name=name, **self.ns(namespace))

    async def list(self, api, namespace):
        return await self.method(api, "list", True)(**self.ns(namespace))

    async def list_all(self, api):
        if self.core_style_list:
            return await self.method(api, "list", True)(namespace=None)
        return await self.method(api, "list_all", True)()

    def watch(self, api, namespace):
        return self.method(api, "watch", True)(**self.ns(namespace))

    def watch_all(self, api):
        if self.core_style_list:
            return self.method(api, "watch", True)(namespace=None)
        return self.method(api, "watch_all", True)()


async def collect_events(watcher_cm, name, events, ready):
    """Collects the watch events of the object called `name` until DELETED."""
    async with watcher_cm as watcher:
        ready.set()
        async for event in watcher:
            if event.object.metadata.name != name:
                continue
            events.append(event)
            if event.type == WatchEventType.DELETED:
                return


def check_watch(c, events, kind, what, seen):
    types = [event.type for event in events]
    c.check(
        all(isinstance(t, WatchEventType) for t in types),
        f"{what}: event types are WatchEventType members: {types!r}",
    )
    c.check(
        len(types) >= 3
        and types[0] == WatchEventType.ADDED
        and types[-1] == WatchEventType.DELETED
        and all(t == WatchEventType.MODIFIED for t in types[1:-1]),
        f"{what}: expected ADDED, MODIFIED..., DELETED, got "
        f"{[getattr(t, 'name', t) for t in types]}",
    )
    c.check(
        all(type(e.object).__name__ == kind.kind for e in events),
        f"{what}: event objects deserialize to {kind.kind}: "
        f"{[type(e.object).__name__ for e in events]}",
    )
    if events and events[-1].type == WatchEventType.DELETED:
        c.check(
            is_utc_datetime(events[-1].object.metadata.deleted),
            f"{what}: the DELETED event carries the object as it was before "
            f"removal, with metadata.deleted set: {events[-1].object.metadata.deleted!r}",
        )
    # The objects written must show up in the events, in that order; the
    # DELETED event's object is the last one stored.
    objects_seen = [serialized(e.object) for e in events]
    position = 0
    for label, expected in seen:
        try:
            position = objects_seen.index(expected, position) + 1
        except ValueError:
            c.check(False, f"{what}: no event (in order) carries {label}: {short(expected)}")
    if events and events[-1].type == WatchEventType.DELETED and seen:
        c.equal(objects_seen[-1], seen[-1][1], f"{what}: the DELETED event's object")
    if events and events[0].type == WatchEventType.ADDED:
        c.check(
            events[0].object.metadata.deleted is None
            and is_utc_datetime(events[0].object.metadata.created),
            f"{what}: the ADDED event carries the created object",
        )


async def run_kind(c, client, base, kind, suffix):
    api = kind.api_class(client)
    name = f"compat-{kind.singular.replace('_', '-')}-{suffix}"
    other = f"{name}-2"
    ns_a = NS_A if kind.namespaced else None
    ns_b = NS_B if kind.namespaced else None

    # Watches first, so that they see the creation.
    watches = []
    for label, cm in [("watch", kind.watch(api, ns_a))] + (
        [("watch across namespaces", kind.watch_all(api))] if kind.namespaced else []
    ):
        events, ready = [], asyncio.Event()
        task = asyncio.ensure_future(collect_events(cm, name, events, ready))
        await asyncio.wait_for(ready.wait(), WATCH_TIMEOUT)
        watches.append((label, events, task))

    try:
        seen = await object_flow(c, api, base, kind, name, other, ns_a, ns_b)
        for label, events, task in watches:
            try:
                await asyncio.wait_for(asyncio.shield(task), WATCH_TIMEOUT)
            except asyncio.TimeoutError:
                c.check(
                    False,
                    f"{label}: no DELETED event within {WATCH_TIMEOUT:.0f} s; saw "
                    f"{[e.type.name for e in events]}",
                )
            check_watch(c, events, kind, label, seen)
    finally:
        for _, _, task in watches:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


async def object_flow(c, api, base, kind, name, other, ns_a, ns_b):
    """Everything but the watch; the objects the watch must have seen, in order."""
    body = kind.build(name, ns_a) if kind.namespaced else kind.build(name)
    sent = serialized(body)
    seen = []

    # Create.
    created = await kind.create(api, body, ns_a)
    c.require(type(created).__name__ == kind.kind, f"create returns a {kind.kind}")
    md = created.metadata
    c.equal(md.name, name, "created metadata.name")
    c.equal(md.namespace, ns_a, "created metadata.namespace")
    try:
        c.equal(uuid.UUID(md.uid).version, 4, "metadata.uid is a UUID4")
    except (TypeError, ValueError):
        c.check(False, f"metadata.uid is a UUID string: {md.uid!r}")
    c.check(recent(md.created), f"metadata.created is a recent UTC datetime: {md.created!r}")
    c.equal(md.modified, md.created, "metadata.modified at creation")
    c.equal(md.deleted, None, "metadata.deleted at creation")
    c.equal(md.finalizers, [], "metadata.finalizers at creation")
    c.equal(md.owners, [], "metadata.owners at creation")
    c.equal(md.labels, body.metadata.labels, "created metadata.labels")
    c.equal((created.api, created.kind), (body.api, body.kind), "api and kind")
    created_json = serialized(created)
    seen.append(("the created object", created_json))
    for field in sent:
        if field not in ("metadata", "status"):
            c.equal(created_json.get(field), sent[field], f"created {field}")
    if kind.status_default is not None:
        c.equal(
            serialized(created.status),
            serialized(kind.status_default()),
            "status defaults at creation",
        )

    await c.refused(kind.create(api, body, ns_a), 409, "creating it again")
    exists = f"{kind.kind} {name!r} already exists" + (
        f" in namespace {ns_a!r}" if kind.namespaced else ""
    )
    await problem(
        c, base, "POST", kind.path(ns_a), sent, 409, "RESOURCE_ALREADY_EXISTS", exists,
        "creating it again (the error body)",
    )

    # Read.
    read = await kind.read(api, name, ns_a)
    c.equal(serialized(read), created_json, "read after create")
    await wire_checks(c, base, kind, kind.path(ns_a, name), type(read))
    missing = name + "-missing"
    await c.refused(kind.read(api, missing, ns_a), 404, "reading a missing object")
    await problem(
        c, base, "GET", kind.path(ns_a, missing), None, 404, "NOT_FOUND_ERROR",
        f"'{kind.kind}' '{missing}' does not exist in namespace {ns_a!r}",
        "reading a missing object (the error body)",
    )

    # A second object (in another namespace for namespaced kinds), with
    # what the server must ignore (readonly fields, the status, a
    # namespace other than the URL's) and keep (finalizers, owners).
    second_body = kind.build(other, ns_b) if kind.namespaced else kind.build(other)
    second_body.metadata.uid = "00000000-0000-4000-8000-000000000000"
    second_body.metadata.created = datetime(2020, 1, 1, tzinfo=timezone.utc)
    second_body.metadata.finalizers = ["compat/keep"]
    owner = ResourceRef(api="core", kind="Role", namespace=None, name="compat-owner")
    second_body.metadata.owners = [owner]
    if kind.namespaced:
        second_body.metadata.namespace = "compat-elsewhere"
    if kind.status_default is not None:
        second_body.status.state = list(type(second_body.status.state))[-1]
    second = await kind.create(api, second_body, ns_b)
    c.equal(second.metadata.namespace, ns_b, "a created object's namespace comes from the URL")
    c.check(
        second.metadata.uid != second_body.metadata.uid, "create ignores the body's metadata.uid"
    )
    c.check(recent(second.metadata.created), "create ignores the body's metadata.created")
    c.equal(second.metadata.finalizers, ["compat/keep"], "create keeps the body's finalizers")
    c.equal(second.metadata.owners, [owner], "create keeps the body's owners")
    if kind.status_default is not None:
        c.equal(
            serialized(second.status),
            serialized(kind.status_default()),
            "create ignores the body's status",
        )

    # Lists.
    listed = await kind.list(api, ns_a)
    c.equal(type(listed).__name__, f"{kind.kind}List", "list type")
    c.equal(listed.kind, f"{kind.kind}List", "list kind")
    names = {(i.metadata.namespace, i.metadata.name) for i in listed.items}
    c.check((ns_a, name) in names, f"list contains {name}: {sorted(names)}")
    c.check(
        all(type(i).__name__ == kind.kind for i in listed.items),
        "list items deserialize to the kind",
    )
    listed_item = [i for i in listed.items if i.metadata.name == name]
    if listed_item:
        c.equal(serialized(listed_item[0]), created_json, "the listed object")
    if kind.namespaced:
        c.check(
            (ns_b, other) not in names,
            f"list in {ns_a} leaves out {ns_b}/{other}: {sorted(names)}",
        )
        c.check(
            all(i.metadata.namespace == ns_a for i in listed.items),
            f"list in {ns_a} has only that namespace",
        )
        everything = await kind.list_all(api)
        c.equal(everything.kind, f"{kind.kind}List", "list-all kind")
        all_names = {(i.metadata.namespace, i.metadata.name) for i in everything.items}
        c.check(
            {(ns_a, name), (ns_b, other)} <= all_names,
            f"list across namespaces has both objects: {sorted(all_names)}",
        )
        keys = [f"{i.metadata.namespace}/{i.metadata.name}" for i in everything.items]
    else:
        c.check((None, other) in names, f"list has both objects: {sorted(names)}")
        keys = [i.metadata.name for i in listed.items]
    c.equal(keys, sorted(keys), "list order (Krake's: etcd key order)")

    # Update: a spec change and a label change.
    changed = copy.deepcopy(read)
    kind.change_spec(changed)
    changed.metadata.labels["stage"] = "two"
    updated = await kind.update(api, changed, ns_a)
    updated_json = serialized(updated)
    seen.append(("the updated object", updated_json))
    changed_json = serialized(changed)
    for field in changed_json:
        if field not in ("metadata", "status"):
            c.equal(updated_json.get(field), changed_json[field], f"{field} after update")
    c.equal(updated.metadata.labels, changed.metadata.labels, "labels after update")
    c.equal(updated.metadata.uid, created.metadata.uid, "uid after update")
    c.equal(updated.metadata.created, created.metadata.created, "created after update")
    c.check(
        is_utc_datetime(updated.metadata.modified)
        and updated.metadata.modified > created.metadata.modified,
        f"modified advances on update: {created.metadata.modified} -> "
        f"{updated.metadata.modified}",
    )
    read = await kind.read(api, name, ns_a)
    c.equal(serialized(read), updated_json, "read after update")
    _, _, raw_read = await raw(base, "GET", kind.path(ns_a, name))
    spec = raw_read.get("spec") if isinstance(raw_read, dict) else None
    if isinstance(spec, dict) and "type" in spec:
        c.equal(
            sorted(k for k in spec if k != "type"),
            [spec["type"]],
            "a polymorphic spec holds only its type's key",
        )

    # An update that changes nothing.
    if kind.kind == "GlobalMetricsProvider":
        # Krake answers 200 here (krake/api/core.py: its handler lacks the
        # "no update" check that every other kind has); 400 is also fine.
        try:
            same = await kind.update(api, copy.deepcopy(read), ns_a)
            c.equal(serialized(same), serialized(read), "no-op update returns the object")
        except ClientResponseError as err:
            c.equal(err.status, 400, "no-op update")
    else:
        await c.refused(kind.update(api, copy.deepcopy(read), ns_a), 400, "no-op update")
        await problem(
            c, base, "PUT", kind.path(ns_a, name), serialized(read), 400, "UPDATE_ERROR",
            "The body contained no update.", "no-op update (the error body)",
        )
    # Changing the name (immutable) in the body.
    renamed = copy.deepcopy(read)
    renamed.metadata.name = name + "-renamed"
    await c.refused(
        kind.method(api, "update")(body=renamed, name=name, **kind.ns(ns_a)),
        400,
        "update changing the immutable metadata.name",
    )
    await problem(
        c, base, "PUT", kind.path(ns_a, name), serialized(renamed), 400, "UPDATE_ERROR",
        "Trying to update an immutable field: name", "immutable metadata.name (the error body)",
    )

    if kind.subresources is not None:
        await kind.subresources(c, api, base, kind, name, ns_a)

    # Delete: deletion in progress while finalizers exist.
    read = await kind.read(api, name, ns_a)
    deleting = await kind.delete(api, name, ns_a)
    c.require(deleting is not None, "delete returns the object (200, not 204)")
    c.check(
        recent(deleting.metadata.deleted),
        f"metadata.deleted set by delete: {deleting.metadata.deleted!r}",
    )
    c.equal(
        deleting.metadata.finalizers,
        read.metadata.finalizers + ["cascade_deletion"],
        "finalizers after delete",
    )
    seen.append(("the object marked as deleted", serialized(deleting)))
    still = await kind.read(api, name, ns_a)
    c.equal(serialized(still), serialized(deleting), "read during deletion")
    again = await kind.delete(api, name, ns_a)
    c.equal(serialized(again), serialized(deleting), "deleting again changes nothing")
    adding = copy.deepcopy(still)
    adding.metadata.finalizers.append("compat/extra")
    await c.refused(kind.update(api, adding, ns_a), 409, "adding a finalizer during deletion")
    await problem(
        c, base, "PUT", kind.path(ns_a, name), serialized(adding), 409, "UPDATE_ERROR",
        "Finalizers can only be removed if a deletion is in progress.",
        "adding a finalizer during deletion (the error body)",
    )
    # Other changes stay allowed during the deletion (Krake only guards the
    # finalizers): the controllers and the garbage collector rely on it.
    relabelled = copy.deepcopy(still)
    relabelled.metadata.labels["phase"] = "deleting"
    still = await kind.update(api, relabelled, ns_a)
    c.equal(still.metadata.labels.get("phase"), "deleting", "a label change during deletion")
    c.equal(still.metadata.deleted, deleting.metadata.deleted, "still deleting after it")
    c.equal(still.metadata.finalizers, deleting.metadata.finalizers, "finalizers kept")
    # Removing the finalizers ends the deletion: the object is gone, and the
    # DELETED event carries it as it was stored last.
    finishing = copy.deepcopy(still)
    finishing.metadata.finalizers = []
    last = await kind.update(api, finishing, ns_a)
    c.equal(last.metadata.finalizers, [], "finalizers in the last update's answer")
    c.check(last.metadata.deleted is not None, "the last update's answer is still deleted")
    seen.append(("the last stored object (in DELETED)", serialized(still)))
    await c.refused(kind.read(api, name, ns_a), 404, "reading after the finalizers are gone")
    listed = await kind.list(api, ns_a)
    c.check(
        name not in {i.metadata.name for i in listed.items}, "the deleted object is not listed"
    )
    await c.refused(kind.delete(api, name, ns_a), 404, "deleting a missing object")

    # Clean up the second one the same way.
    gone = await kind.delete(api, other, ns_b)
    c.equal(
        gone.metadata.finalizers, ["compat/keep", "cascade_deletion"], "delete appends its finalizer"
    )
    gone.metadata.finalizers = []
    await kind.update(api, gone, ns_b)
    await c.refused(kind.read(api, other, ns_b), 404, "the second object is gone")
    return seen


# Spec changes per kind ------------------------------------------------------


def change_role(role):
    role.rules[0].verbs = role.rules[0].verbs[:2]
    role.rules[0].namespaces = ["compat-a"]


def change_role_binding(binding):
    binding.users = ["carol"]


def change_metric(metric):
    metric.spec.max = 20.0
    metric.spec.provider.metric = "heat2"


def change_prometheus(provider):
    # Another type of the polymorphic spec: the old one's key must go.
    provider.spec = MetricsProviderSpec(
        type="kafka",
        kafka=KafkaSpec(
            comparison_column="name", value_column="value", table="metrics",
            url="http://127.0.0.1:8088",
        ),
    )


def change_static(provider):
    provider.spec = MetricsProviderSpec(
        type="prometheus", prometheus=PrometheusSpec(url="http://127.0.0.1:9091")
    )


def change_im(provider):
    provider.spec.im.url = "http://127.0.0.1:8801"


def change_cloud(cloud):
    cloud.spec.openstack.url = "http://127.0.0.1:5001/v3"
    cloud.spec.openstack.metrics[0].weight = 2.5


def change_cluster(cluster):
    cluster.spec.custom_resources = []
    cluster.spec.metrics[0].weight = 0.75


def change_application(app):
    app.spec.manifest[0]["spec"]["replicas"] = 3
    app.spec.backoff_limit = 5


def change_project(project):
    project.spec.template = "2f3c1c5e-0000-4000-8000-000000000000"


def change_magnum(cluster):
    cluster.spec.node_count = 5


# Subresources ---------------------------------------------------------------


async def status_roundtrip(c, api, kind, name, ns, set_status, check_status):
    """update_*_status with a changed status; `modified` stays."""
    read = await kind.read(api, name, ns)
    body = copy.deepcopy(read)
    set_status(body.status)
    body.spec = read.spec
    result = await getattr(api, f"update_{kind.singular}_status")(
        body=body, name=name, **kind.ns(ns)
    )
    check_status(result.status)
    c.equal(serialized(result.status), serialized(body.status), "status after status update")
    c.equal(result.metadata.modified, read.metadata.modified, "status update leaves modified")
    c.equal(serialized(result.spec), serialized(read.spec), "status update leaves the spec")
    again = await kind.read(api, name, ns)
    c.equal(serialized(again), serialized(result), "read after status update")
    # A status in the body of a plain update is ignored (subresource).
    plain = copy.deepcopy(again)
    kind.change_spec(plain)
    plain.metadata.labels["status-test"] = "x"
    plain.status = type(read.status)()
    after = await kind.update(api, plain, ns)
    c.equal(
        serialized(after.status),
        serialized(again.status),
        "a plain update leaves the status alone",
    )
    return after


def reason(message):
    return Reason(code=ReasonCode.UNKNOWN_METRIC, message=message)


async def cluster_subresources(c, api, base, kind, name, ns):
    def set_status(status):
        status.state = ClusterState.ONLINE
        status.metrics_reasons = {"heat": reason("heat is unknown")}
        status.cluster_id = "infra-1"
        status.nodes = [
            ClusterNode(
                metadata=ClusterNodeMetadata(name="node-1"),
                status=ClusterNodeStatus(
                    conditions=[
                        ClusterNodeCondition(
                            message="ok", reason="KubeletReady", status="True", type="Ready"
                        )
                    ]
                ),
            )
        ]

    def check(status):
        c.equal(status.state, ClusterState.ONLINE, "cluster status.state (an enum)")
        c.check(
            isinstance(status.metrics_reasons.get("heat"), Reason)
            and status.metrics_reasons["heat"].code == ReasonCode.UNKNOWN_METRIC,
            f"metrics_reasons come back as Reason with a ReasonCode: {status.metrics_reasons!r}",
        )
        c.equal(status.nodes[0].metadata.name if status.nodes else None, "node-1", "nodes")

    await status_roundtrip(c, api, kind, name, ns, set_status, check)
    before = await kind.read(api, name, ns)
    ref = ResourceRef(api="infrastructure", kind="Cloud", namespace=ns, name="compat-cloud")
    bound = await api.update_cluster_binding(
        body=CloudBinding(cloud=ref), name=name, namespace=ns
    )
    c.equal(bound.status.scheduled_to, ref, "cluster binding: status.scheduled_to")
    c.check(recent(bound.status.scheduled), f"cluster binding: scheduled {bound.status.scheduled!r}")
    c.check(ref in bound.metadata.owners, f"cluster binding: owners {bound.metadata.owners!r}")
    c.equal(bound.metadata.modified, before.metadata.modified, "binding leaves modified")
    again = await api.update_cluster_binding(body=CloudBinding(cloud=ref), name=name, namespace=ns)
    c.equal(again.metadata.owners.count(ref), 1, "binding twice adds the owner once")


async def application_subresources(c, api, base, kind, name, ns):
    manifest = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"a": "b"}},
            "spec": {"replicas": 2, "paused": False, "ratio": 0.5, "list": [1, "x", None]},
        }
    ]

    def set_status(status):
        status.state = ApplicationState.RUNNING
        status.reason = Reason(code=ReasonCode.RECONCILE_FAILED, message="once")
        status.kube_controller_triggered = datetime.now(timezone.utc)
        status.scheduled_retry = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
        status.retries = 2
        status.last_applied_manifest = manifest
        status.last_observed_manifest = manifest
        status.mangled_observer_schema = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": None},
                "spec": {"replicas": None},
            }
        ]
        status.services = {"echo": "127.0.0.1:30080"}
        status.container_health.desired_pods = 2
        status.container_health.running_pods = 2
        status.complete_token = "tok-complete"
        status.shutdown_token = "tok-shutdown"

    def check(status):
        c.equal(status.state, ApplicationState.RUNNING, "application status.state (an enum)")
        c.equal(status.container_health.running_pods, 2, "container_health.running_pods")
        c.equal(status.services, {"echo": "127.0.0.1:30080"}, "status.services")
        c.equal(status.reason.code if status.reason else None, ReasonCode.RECONCILE_FAILED,
                "status.reason.code (a ReasonCode)")
        c.equal(status.scheduled_retry,
                datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
                "status.scheduled_retry (microseconds kept)")
        c.equal(status.last_applied_manifest, manifest, "status.last_applied_manifest")

    await status_roundtrip(c, api, kind, name, ns, set_status, check)

    # Binding.
    before = await kind.read(api, name, ns)
    ref = ResourceRef(api="kubernetes", kind="Cluster", namespace=ns, name="compat-cluster")
    bound = await api.update_application_binding(
        body=ClusterBinding(cluster=ref), name=name, namespace=ns
    )
    c.equal(bound.status.scheduled_to, ref, "application binding: scheduled_to")
    c.check(recent(bound.status.scheduled), "application binding: status.scheduled")
    c.check(
        recent(bound.status.kube_controller_triggered),
        "application binding: status.kube_controller_triggered",
    )
    c.equal(bound.metadata.owners, [ref], "application binding: owners")
    c.equal(bound.metadata.modified, before.metadata.modified, "binding leaves modified")

    # Shutdown: a wrong token is refused; the right one changes the state
    # only from WAITING_FOR_CLEANING or DEGRADED.
    await c.refused(
        api.update_application_shutdown(
            body=ApplicationShutdown(token="wrong"), name=name, namespace=ns
        ),
        401,
        "shutdown with a wrong token",
    )
    running = await api.update_application_shutdown(
        body=ApplicationShutdown(token="tok-shutdown"), name=name, namespace=ns
    )
    c.equal(running.status.state, ApplicationState.RUNNING, "shutdown while RUNNING keeps the state")
    degraded = copy.deepcopy(running)
    degraded.status.state = ApplicationState.DEGRADED
    degraded.status.shutdown_grace_period = datetime.now(timezone.utc)
    degraded = await api.update_application_status(body=degraded, name=name, namespace=ns)
    c.check(
        is_utc_datetime(degraded.status.shutdown_grace_period),
        "status.shutdown_grace_period is a datetime",
    )
    ready = await api.update_application_shutdown(
        body=ApplicationShutdown(token="tok-shutdown"), name=name, namespace=ns
    )
    c.equal(ready.status.state, ApplicationState.READY_FOR_ACTION, "shutdown from DEGRADED")
    c.equal(ready.status.shutdown_grace_period, None, "shutdown clears the grace period")

    # Retry (no client method; krakectl and Krake's dashboard send a bare PUT).
    path = f"/kubernetes/namespaces/{ns}/applications/{name}/retry"
    status, ctype, answer = await raw(base, "PUT", path)
    c.equal(status, 400, "retry when not DEGRADED")
    c.check(
        "application/problem+json" in ctype, f"retry refusal is a problem+json: {ctype!r}"
    )
    if isinstance(answer, dict):
        c.equal(answer.get("title"), "UPDATE_ERROR", "retry refusal title")
        c.equal(answer.get("detail"), "No migration or deletion retry needed", "retry detail")
    degraded = copy.deepcopy(ready)
    degraded.status.state = ApplicationState.DEGRADED
    degraded.status.shutdown_grace_period = datetime.now(timezone.utc)
    await api.update_application_status(body=degraded, name=name, namespace=ns)
    status, _, answer = await raw(base, "PUT", path)
    c.equal(status, 200, "retry when DEGRADED")
    if isinstance(answer, dict):
        retried = type(ready).deserialize(answer)
        c.equal(retried.status.state, ApplicationState.WAITING_FOR_CLEANING, "state after retry")
        c.equal(retried.status.shutdown_grace_period, None, "retry clears the grace period")
    status, _, _ = await raw(base, "PUT", f"/kubernetes/namespaces/{ns}/applications/nope/retry")
    c.equal(status, 404, "retry of a missing application")

    # Complete, on an application of its own: it marks it as deleted.
    other = name + "-complete"
    app = await api.create_application(
        body=objects.application(other, ns, hooks=["complete"]), namespace=ns
    )
    await c.refused(
        api.update_application_complete(body=ApplicationComplete(token="x"), name=other, namespace=ns),
        401,
        "complete without a token in the status",
    )
    app.status.complete_token = "tok-c"
    await api.update_application_status(body=app, name=other, namespace=ns)
    await c.refused(
        api.update_application_complete(
            body=ApplicationComplete(token="wrong"), name=other, namespace=ns
        ),
        401,
        "complete with a wrong token",
    )
    await problem(
        c, base, "PUT", kind.path(ns, other) + "/complete",
        {"api": "kubernetes", "kind": "Complete", "token": "wrong"}, 401, None,
        "No token has been provided or the provided one is invalid.",
        "complete with a wrong token (the error body)",
    )
    await c.refused(
        api.update_application_complete(body=ApplicationComplete(), name=other, namespace=ns),
        401,
        "complete without a token",
    )
    done = await api.update_application_complete(
        body=ApplicationComplete(token="tok-c"), name=other, namespace=ns
    )
    c.equal(done.status.state, ApplicationState.READY_FOR_ACTION, "state after complete")
    c.check(recent(done.metadata.deleted), "complete sets metadata.deleted")
    c.equal(done.metadata.finalizers, [], "complete adds no finalizer")
    # Clean up: already deleting without finalizers; a force delete removes it.
    status, _, _ = await raw(
        base, "DELETE", f"/kubernetes/namespaces/{ns}/applications/{other}?force=True"
    )
    c.equal(status, 200, "force delete")
    await c.refused(api.read_application(name=other, namespace=ns), 404, "read after force delete")

    # Deleting an application with the shutdown hook: WAITING_FOR_CLEANING.
    hooked = name + "-shutdown"
    await api.create_application(
        body=objects.application(hooked, ns, hooks=["shutdown"]), namespace=ns
    )
    deleting = await api.delete_application(name=hooked, namespace=ns)
    c.equal(
        deleting.status.state,
        ApplicationState.WAITING_FOR_CLEANING,
        "delete with the shutdown hook",
    )
    deleting.status.shutdown_token = "tok-s"
    await api.update_application_status(body=deleting, name=hooked, namespace=ns)
    ready = await api.update_application_shutdown(
        body=ApplicationShutdown(token="tok-s"), name=hooked, namespace=ns
    )
    c.equal(ready.status.state, ApplicationState.READY_FOR_ACTION, "shutdown while deleting")
    c.check(ready.metadata.deleted is not None, "still deleting after shutdown")
    ready.metadata.finalizers = []
    await api.update_application(body=ready, name=hooked, namespace=ns)
    await c.refused(api.read_application(name=hooked, namespace=ns), 404, "hooked app gone")


async def cloud_subresources(c, api, base, kind, name, ns):
    def set_status(status):
        status.state = CloudState.FAILING_METRICS
        status.metrics_reasons = {"heat": reason("no heat")}

    def check(status):
        c.equal(status.state, CloudState.FAILING_METRICS, "cloud status.state")

    await status_roundtrip(c, api, kind, name, ns, set_status, check)


async def project_subresources(c, api, base, kind, name, ns):
    def set_status(status):
        status.state = ProjectState.FAILING_METRICS
        status.metrics_reasons = {"heat": reason("no heat")}

    def check(status):
        c.equal(status.state, ProjectState.FAILING_METRICS, "project status.state")

    await status_roundtrip(c, api, kind, name, ns, set_status, check)


async def magnum_subresources(c, api, base, kind, name, ns):
    def set_status(status):
        status.state = MagnumClusterState.RUNNING
        status.node_count = 3
        status.api_address = "https://127.0.0.1:6443"
        status.node_addresses = ["10.0.0.2", "10.0.0.3"]
        status.master_addresses = ["10.0.0.1"]
        status.cluster_id = "magnum-1"
        status.reason = Reason(code=ReasonCode.OPENSTACK_ERROR, message="slow")

    def check(status):
        c.equal(status.state, MagnumClusterState.RUNNING, "magnum status.state")
        c.equal(status.node_addresses, ["10.0.0.2", "10.0.0.3"], "magnum node_addresses")

    await status_roundtrip(c, api, kind, name, ns, set_status, check)
    ref = ResourceRef(api="openstack", kind="Project", namespace=ns, name="compat-project")
    bound = await api.update_magnum_cluster_binding(
        body=MagnumClusterBinding(project=ref, template="tmpl-1"), name=name, namespace=ns
    )
    c.equal(bound.status.project, ref, "magnum binding: status.project")
    c.equal(bound.status.template, "tmpl-1", "magnum binding: status.template")
    c.check(ref in bound.metadata.owners, "magnum binding: owners")
    # status.template is immutable once set, spec.master_count always.
    changed = copy.deepcopy(bound)
    changed.status.template = "tmpl-2"
    await c.refused(
        api.update_magnum_cluster_status(body=changed, name=name, namespace=ns),
        400,
        "changing the immutable status.template",
    )
    changed = copy.deepcopy(bound)
    changed.spec.master_count = 3
    await c.refused(
        api.update_magnum_cluster(body=changed, name=name, namespace=ns),
        400,
        "changing the immutable spec.master_count",
    )


def kinds():
    from krake.data.infrastructure import CloudStatus
    from krake.data.kubernetes import ApplicationStatus, ClusterStatus
    from krake.data.openstack import MagnumClusterStatus, ProjectStatus

    o = objects
    return [
        Kind(CoreApi, "Role", "role", "roles", False, o.role, change_role),
        Kind(CoreApi, "RoleBinding", "role_binding", "role_bindings", False,
             o.role_binding, change_role_binding),
        Kind(CoreApi, "GlobalMetric", "global_metric", "global_metrics", False,
             o.global_metric, change_metric),
        Kind(CoreApi, "Metric", "metric", "metrics", True, o.metric, change_metric,
             core_style_list=True),
        Kind(CoreApi, "GlobalMetricsProvider", "global_metrics_provider",
             "global_metrics_providers", False, o.global_metrics_provider,
             change_prometheus),
        Kind(CoreApi, "MetricsProvider", "metrics_provider", "metrics_providers", True,
             o.metrics_provider, change_static, core_style_list=True),
        Kind(KubernetesApi, "Application", "application", "applications", True,
             o.application, change_application, ApplicationStatus,
             application_subresources),
        Kind(KubernetesApi, "Cluster", "cluster", "clusters", True, o.cluster,
             change_cluster, ClusterStatus, cluster_subresources),
        Kind(InfrastructureApi, "GlobalInfrastructureProvider",
             "global_infrastructure_provider", "global_infrastructure_providers", False,
             o.global_infrastructure_provider, change_im),
        Kind(InfrastructureApi, "InfrastructureProvider", "infrastructure_provider",
             "infrastructure_providers", True, o.infrastructure_provider, change_im),
        Kind(InfrastructureApi, "GlobalCloud", "global_cloud", "global_clouds", False,
             o.global_cloud, change_cloud, CloudStatus, cloud_subresources),
        Kind(InfrastructureApi, "Cloud", "cloud", "clouds", True, o.cloud, change_cloud,
             CloudStatus, cloud_subresources),
        Kind(OpenStackApi, "Project", "project", "projects", True, o.project,
             change_project, ProjectStatus, project_subresources),
        Kind(OpenStackApi, "MagnumCluster", "magnum_cluster", "magnum_clusters", True,
             o.magnum_cluster, change_magnum, MagnumClusterStatus, magnum_subresources),
    ]


async def krakectl_metric(c, base, suffix):
    """A GlobalMetric and a Metric created as krakectl does: min and max as strings."""
    from krake.data.core import GlobalMetric, Metric

    for kind, path, cls in [
        ("GlobalMetric", "/core/globalmetrics", GlobalMetric),
        ("Metric", f"/core/namespaces/{NS_A}/metrics", Metric),
    ]:
        name = f"compat-krakectl-{kind.lower()}-{suffix}"
        body = {
            "api": "core",
            "kind": kind,
            "metadata": {"name": name},
            "spec": {
                "min": "0",
                "max": "1.5",
                "provider": {"name": "compat-static", "metric": "heat"},
            },
        }
        status, _, answer = await raw(base, "POST", path, body)
        if not c.equal(status, 200, f"krakectl-style {kind} with string min/max ({answer!r})"):
            continue
        obj = cls.deserialize(answer)
        c.equal((obj.spec.min, obj.spec.max), (0.0, 1.5), f"krakectl-style {kind}: min, max")
        c.check(
            isinstance(answer["spec"]["min"], (int, float))
            and isinstance(answer["spec"]["max"], (int, float)),
            f"krakectl-style {kind}: min and max come back as numbers: {answer['spec']!r}",
        )
        async with Client(base) as client:
            api = CoreApi(client)
            if kind == "GlobalMetric":
                await api.delete_global_metric(name=name)
                gone = await api.read_global_metric(name=name)
                gone.metadata.finalizers = []
                await api.update_global_metric(body=gone, name=name)
            else:
                await api.delete_metric(name=name, namespace=NS_A)
                gone = await api.read_metric(name=name, namespace=NS_A)
                gone.metadata.finalizers = []
                await api.update_metric(body=gone, name=name, namespace=NS_A)


def heartbeat_request(base):
    """(Content-Type, the first line) of a watch with heartbeat=1."""
    request = urllib.request.Request(base + "/core/roles?watch&heartbeat=1")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers.get("Content-Type", ""), response.readline()


async def heartbeat(c, base):
    """A watch sends a bare newline every `heartbeat` seconds."""
    loop = asyncio.get_event_loop()
    started = time.monotonic()
    ctype, line = await loop.run_in_executor(None, heartbeat_request, base)
    c.check(
        ctype.startswith("application/x-ndjson"), f"watch Content-Type is NDJSON: {ctype!r}"
    )
    c.equal(line, b"\n", "the first line of a quiet watch with heartbeat=1")
    c.check(time.monotonic() - started < 4, "the heartbeat comes within about a second")


async def misc(c, base, suffix):
    """The endpoints outside the kinds, and bodies Krake refuses or trims."""
    status, ctype, answer = await raw(base, "GET", "/")
    c.equal(status, 200, "GET /")
    c.equal(isinstance(answer, dict) and answer.get("version"), "1.0.1", "GET /: version")
    status, _, answer = await raw(base, "GET", "/me")
    c.equal((status, answer), (200, {"user": "system:anonymous", "roles": []}), "GET /me")
    status, _, answer = await raw(base, "GET", "/release")
    c.equal((status, answer), (202, "You released the Krake."), "GET /release")

    role = serialized(objects.role(f"compat-misc-{suffix}"))
    bad = copy.deepcopy(role)
    bad["metadata"]["name"] = "-bad name-"
    await problem(
        c, base, "POST", "/core/roles", bad, 422, None, "Invalid character in resource name.",
        "an invalid name",
    )
    bad = copy.deepcopy(role)
    bad["kind"] = "RoleBinding"
    await problem(c, base, "POST", "/core/roles", bad, 422, None, None, "a wrong kind")
    bad = copy.deepcopy(role)
    del bad["rules"]
    await problem(
        c, base, "POST", "/core/roles", bad, 422, None, "Missing data for required field.",
        "a missing field",
    )

    # Rules of Krake's data classes beyond single fields (their __post_init__).
    cloud = serialized(objects.global_cloud(f"compat-misc-{suffix}"))
    cloud["spec"]["openstack"]["infrastructure_provider"]["namespaced"] = True
    await problem(
        c, base, "POST", "/infrastructure/globalclouds", cloud, 422, None, None,
        "a GlobalCloud with a namespaced infrastructure provider",
    )
    app = serialized(objects.application(f"compat-misc-{suffix}", NS_A))
    app["spec"]["manifest"] = []
    await problem(
        c, base, "POST", f"/kubernetes/namespaces/{NS_A}/applications", app, 422, None,
        "The application should be defined by a manifest file, a TOSCA template or a CSAR file.",
        "an application without manifest, TOSCA or CSAR",
    )
    cluster = serialized(objects.cluster(f"compat-misc-{suffix}", NS_A))
    cluster["spec"]["kubeconfig"] = {}
    await problem(
        c, base, "POST", f"/kubernetes/namespaces/{NS_A}/clusters", cluster, 422, None, None,
        "a cluster without kubeconfig or TOSCA",
    )

    def not_json():
        request = urllib.request.Request(
            base + "/core/roles", data=b"{not json", method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", "")

    status, ctype = await asyncio.get_event_loop().run_in_executor(None, not_json)
    c.equal(status, 415, "a body that is not JSON")
    c.check(ctype.startswith("application/problem+json"), f"415 Content-Type: {ctype!r}")

    # Unknown keys are dropped, at the top and inside.
    extra = copy.deepcopy(role)
    extra["surprise"] = 1
    extra["rules"][0]["surprise"] = 2
    extra["metadata"]["surprise"] = 3
    status, _, answer = await raw(base, "POST", "/core/roles", extra)
    c.equal(status, 200, f"unknown keys are not an error ({answer!r})")
    if status == 200:
        c.check(
            "surprise" not in answer
            and "surprise" not in answer["rules"][0]
            and "surprise" not in answer["metadata"],
            f"unknown keys are dropped: {answer!r}",
        )
        async with Client(base) as client:
            api = CoreApi(client)
            gone = await api.delete_role(name=role["metadata"]["name"])
            gone.metadata.finalizers = []
            await api.update_role(body=gone, name=role["metadata"]["name"])


async def main(args):
    base = args.url.rstrip("/")
    status, _, answer = await raw(base, "GET", "/")
    if status != 200:
        print(f"compat: {base} does not answer GET / ({status}: {answer!r})", file=sys.stderr)
        return 2
    c = Checks()
    suffix = uuid.uuid4().hex[:6]
    selected = [k for k in kinds() if not args.kind or k.kind in args.kind]
    started = time.monotonic()
    failed_kinds = []
    async with Client(base) as client:
        for kind in selected:
            c.kind = kind.kind
            before = (c.passed, len(c.failures))
            t0 = time.monotonic()
            try:
                await run_kind(c, client, base, kind, suffix)
            except CheckFailed:
                pass
            except Exception as err:  # noqa: an unexpected answer ends this kind
                c.failures.append((kind.kind, f"{type(err).__name__}: {err}"))
                print(f"FAIL [{kind.kind}] unexpected {type(err).__name__}: {err}")
                traceback.print_exc()
            passed = c.passed - before[0]
            failed = len(c.failures) - before[1]
            if failed:
                failed_kinds.append(kind.kind)
            print(
                f"  {kind.kind:<30} {passed:3d} checks passed, {failed} failed "
                f"({time.monotonic() - t0:.1f} s)",
                flush=True,
            )
    if not args.kind:
        c.kind = "misc"
        try:
            await misc(c, base, suffix)
        except Exception as err:  # noqa
            c.failures.append((c.kind, f"{type(err).__name__}: {err}"))
            traceback.print_exc()
        c.kind = "watch-heartbeat"
        try:
            await heartbeat(c, base)
        except Exception as err:  # noqa
            c.failures.append((c.kind, f"{type(err).__name__}: {err}"))
            traceback.print_exc()
        c.kind = "krakectl-metric"
        try:
            await krakectl_metric(c, base, suffix)
        except Exception as err:  # noqa
            c.failures.append((c.kind, f"{type(err).__name__}: {err}"))
            traceback.print_exc()
    label = f" ({args.label})" if args.label else ""
    print(
        f"compat{label}: {len(selected)} kinds, {c.passed} checks passed, "
        f"{len(c.failures)} failed"
        + (f" (in {', '.join(sorted(set(k for k, _ in c.failures)))})" if c.failures else "")
        + f", {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return 1 if c.failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="krake-server's URL")
    parser.add_argument("--label", default="", help="a name for the summary line")
    parser.add_argument("--kind", action="append", help="only this kind (repeatable)")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sys.exit(loop.run_until_complete(main(args)))
