"""Realistic objects of every kind, built from Krake 1.0.1's own data classes.

Each builder takes a name and (for namespaced kinds) a namespace and returns
the object a Krake client would send to create it: readonly metadata fields
unset (``uid``/``created``/``modified`` are ``None``) and the status (for the
kinds that have one) at its defaults.
"""

from krake.data.constraints import LabelConstraint, MetricConstraint
from krake.data.core import (
    GlobalMetric,
    GlobalMetricsProvider,
    Metadata,
    Metric,
    MetricRef,
    MetricSpec,
    MetricSpecProvider,
    MetricsProvider,
    MetricsProviderSpec,
    PrometheusSpec,
    Role,
    RoleBinding,
    RoleRule,
    StaticSpec,
    Verb,
)
from krake.data.infrastructure import (
    Cloud,
    CloudSpec,
    CloudStatus,
    GlobalCloud,
    GlobalInfrastructureProvider,
    ImSpec,
    InfrastructureProvider,
    InfrastructureProviderRef,
    InfrastructureProviderSpec,
    OpenstackAuthMethod,
    OpenstackSpec,
    Password,
    ProjectReference,
    UserReference,
)
from krake.data.kubernetes import (
    Application,
    ApplicationSpec,
    ApplicationStatus,
    CloudConstraints,
    Cluster,
    ClusterCloudConstraints,
    ClusterConstraints,
    ClusterSpec,
    ClusterStatus,
    Constraints,
)
from krake.data.openstack import (
    ApplicationCredential,
    AuthMethod,
    MagnumCluster,
    MagnumClusterSpec,
    MagnumClusterStatus,
    Project,
    ProjectSpec,
    ProjectStatus,
)
from krake.data.openstack import Constraints as MagnumConstraints
from krake.data.openstack import ProjectConstraints


def metadata(name, namespace=None, labels=None):
    return Metadata(
        name=name,
        namespace=namespace,
        labels=dict(labels or {"team": "compat"}),
        uid=None,
        created=None,
        modified=None,
    )


def role(name, namespace=None):
    return Role(
        metadata=metadata(name),
        rules=[
            RoleRule(
                api="kubernetes",
                resources=["applications", "applications/status"],
                namespaces=["compat-a", ""],
                verbs=[Verb.create, Verb.list, Verb.get, Verb.update, Verb.delete],
            )
        ],
    )


def role_binding(name, namespace=None):
    return RoleBinding(metadata=metadata(name), users=["alice", "bob"], roles=["reader"])


def _metric_spec():
    return MetricSpec(
        min=0.0,
        max=10.0,
        provider=MetricSpecProvider(name="compat-static", metric="heat"),
    )


def global_metric(name, namespace=None):
    return GlobalMetric(metadata=metadata(name), spec=_metric_spec())


def metric(name, namespace):
    return Metric(metadata=metadata(name, namespace), spec=_metric_spec())


def global_metrics_provider(name, namespace=None):
    return GlobalMetricsProvider(
        metadata=metadata(name),
        spec=MetricsProviderSpec(
            type="prometheus", prometheus=PrometheusSpec(url="http://127.0.0.1:9090")
        ),
    )


def metrics_provider(name, namespace):
    return MetricsProvider(
        metadata=metadata(name, namespace),
        spec=MetricsProviderSpec(
            type="static", static=StaticSpec(metrics={"heat": 0.5, "load": 0.25})
        ),
    )


def _im_spec():
    return InfrastructureProviderSpec(
        type="im", im=ImSpec(url="http://127.0.0.1:8800", username="u", password="p")
    )


def global_infrastructure_provider(name, namespace=None):
    return GlobalInfrastructureProvider(metadata=metadata(name), spec=_im_spec())


def infrastructure_provider(name, namespace):
    return InfrastructureProvider(metadata=metadata(name, namespace), spec=_im_spec())


def _cloud_spec(namespaced):
    return CloudSpec(
        type="openstack",
        openstack=OpenstackSpec(
            url="http://127.0.0.1:5000/v3",
            auth=OpenstackAuthMethod(
                type="password",
                password=Password(
                    user=UserReference(username="u", password="p"),
                    project=ProjectReference(name="proj"),
                ),
            ),
            metrics=[MetricRef(name="heat", weight=1.0, namespaced=namespaced)],
            infrastructure_provider=InfrastructureProviderRef(
                name="compat-im", namespaced=namespaced
            ),
        ),
    )


def global_cloud(name, namespace=None):
    return GlobalCloud(metadata=metadata(name), spec=_cloud_spec(False), status=CloudStatus())


def cloud(name, namespace):
    return Cloud(
        metadata=metadata(name, namespace), spec=_cloud_spec(True), status=CloudStatus()
    )


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {
            "name": "c",
            "cluster": {
                "server": "https://127.0.0.1:6443",
                "certificate-authority-data": "Zm9v",
            },
        }
    ],
    "users": [
        {"name": "u", "user": {"client-certificate-data": "YmFy", "client-key-data": "YmF6"}}
    ],
    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "ctx",
}


def cluster(name, namespace):
    return Cluster(
        metadata=metadata(name, namespace, {"location": "DE"}),
        spec=ClusterSpec(
            kubeconfig=KUBECONFIG,
            custom_resources=["crontabs.stable.example.com"],
            constraints=ClusterCloudConstraints(
                cloud=CloudConstraints(
                    labels=[LabelConstraint.parse("location in (DE, AT)")],
                    metrics=[MetricConstraint.parse("heat < 0.8")],
                )
            ),
            metrics=[MetricRef(name="heat", weight=0.5, namespaced=False)],
        ),
        status=ClusterStatus(),
    )


def application(name, namespace, hooks=()):
    return Application(
        metadata=metadata(name, namespace, {"tier": "web"}),
        spec=ApplicationSpec(
            manifest=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": name}},
                        "template": {
                            "metadata": {"labels": {"app": name}},
                            "spec": {
                                "containers": [{"name": "echo", "image": "nginx:1.25"}]
                            },
                        },
                    },
                }
            ],
            constraints=Constraints(
                cluster=ClusterConstraints(
                    labels=[LabelConstraint.parse("location is DE")],
                    custom_resources=[],
                    metrics=[MetricConstraint.parse("heat < 0.9")],
                ),
                migration=True,
            ),
            hooks=list(hooks),
        ),
        status=ApplicationStatus(),
    )


def project(name, namespace):
    return Project(
        metadata=metadata(name, namespace, {"location": "DE"}),
        spec=ProjectSpec(
            url="http://127.0.0.1:5000/v3",
            auth=AuthMethod(
                type="application_credential",
                application_credential=ApplicationCredential(id="cred", secret="s"),
            ),
            template="1f3c1c5e-0000-4000-8000-000000000000",
            metrics=[],
        ),
        status=ProjectStatus(),
    )


def magnum_cluster(name, namespace):
    return MagnumCluster(
        metadata=metadata(name, namespace),
        spec=MagnumClusterSpec(
            master_count=1,
            node_count=3,
            metrics=[],
            constraints=MagnumConstraints(
                project=ProjectConstraints(labels=[LabelConstraint.parse("location is DE")])
            ),
        ),
        status=MagnumClusterStatus(),
    )
