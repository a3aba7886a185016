//! The fake Kubernetes API server (`krake_testkit::kube`) against the real
//! `kube` client: kubeconfigs, CRUD with Status reasons, server-side apply,
//! the status subresource, watches through `kube::runtime::watcher`, CRDs
//! at run time, the simulated kubelet and faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use krake_testkit::kube::FakeCluster;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use serde_json::{Value, json};

async fn config(kubeconfig: Value) -> Config {
    let kc: Kubeconfig = serde_json::from_value(kubeconfig).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(10));
    config
}

async fn client(kubeconfig: Value) -> Client {
    Client::try_from(config(kubeconfig).await).expect("client")
}

/// A client without kube's default retries of 429/503/504, to see them.
async fn client_without_retries(kubeconfig: Value) -> Client {
    let mut config = config(kubeconfig).await;
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]}
            }
        }
    })
}

/// Polls `f` until it gives `Some`, for up to 5 s.
async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..250 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn cert_and_token_kubeconfigs_list_namespaces() {
    let fake = FakeCluster::start().await.unwrap();
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    let kc = fake.kubeconfig();
    assert_eq!(kc["kind"], "Config");
    assert!(kc["users"][0]["user"]["client-key-data"].is_string());

    for kc in [fake.kubeconfig(), fake.kubeconfig_with_token()] {
        let c = client(kc).await;
        let names: Vec<String> = Api::<Namespace>::all(c.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        for ns in ["default", "kube-system", "kube-public"] {
            assert!(names.contains(&ns.to_string()), "{names:?}");
        }
        let version = c.apiserver_version().await.unwrap();
        assert_eq!(version.major, "1");
    }

    // No credentials: 401 with a Status.
    let mut anonymous = fake.kubeconfig();
    anonymous["users"][0]["user"] = json!({});
    let err = Api::<Namespace>::all(client(anonymous).await)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let status = api_status(err);
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));

    // A second fake has its own CA: the first one's kubeconfig does not trust it.
    let other = FakeCluster::start().await.unwrap();
    assert_ne!(other.url(), fake.url());
    let mut crossed = other.kubeconfig();
    crossed["clusters"][0]["cluster"]["certificate-authority-data"] =
        fake.kubeconfig()["clusters"][0]["cluster"]["certificate-authority-data"].clone();
    assert!(
        Api::<Namespace>::all(client(crossed).await)
            .list(&ListParams::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn wrong_ca_fails_with_a_tls_error() {
    let fake = FakeCluster::start().await.unwrap();
    let err = Api::<Namespace>::all(client(fake.kubeconfig_with_wrong_ca()).await)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls") || text.contains("unknownissuer"),
        "{text}"
    );
}

#[tokio::test]
async fn create_get_replace_delete_with_status_reasons() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings", "labels": {"tier": "a"}}, "data": {"k": "v"}
    }))
    .unwrap();

    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv1 = meta.resource_version.clone().unwrap();

    let status = api_status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let got = cms.get("settings").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
    let status = api_status(cms.get("missing").await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    // Replace with the current resourceVersion, then with the stale one.
    let mut newer = created.clone();
    newer.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = cms
        .replace("settings", &PostParams::default(), &newer)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let status = api_status(
        cms.replace("settings", &PostParams::default(), &newer)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    // generateName, selectors, all-namespaces list.
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.metadata.name.unwrap().starts_with("gen-"));
    let listed = cms
        .list(&ListParams::default().labels("tier=a"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());
    let by_name = Api::<ConfigMap>::all(c.clone())
        .list(&ListParams::default().fields("metadata.name=settings"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Missing namespace.
    let elsewhere: Api<ConfigMap> = Api::namespaced(c.clone(), "nowhere");
    let status = api_status(
        elsewhere
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    // Validation: a Deployment without a selector and with a bad name.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut bad = deployment("Bad_Name", "nginx");
    bad["spec"].as_object_mut().unwrap().remove("selector");
    let bad: Deployment = serde_json::from_value(bad).unwrap();
    let status = api_status(
        deployments
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let fields: Vec<String> = status
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert!(fields.contains(&"spec.selector".to_string()), "{fields:?}");
    assert!(fields.contains(&"metadata.name".to_string()), "{fields:?}");

    // Delete: the object goes, a second delete is 404.
    cms.delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    let status = api_status(
        cms.delete("settings", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert!(
        fake.get("v1", "ConfigMap", Some("default"), "settings")
            .is_none()
    );

    // Finalizers hold the object with a deletionTimestamp.
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    let patch = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    // Namespace deletion removes its objects.
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let team: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    team.create(&PostParams::default(), &cm).await.unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    assert!(nss.get_opt("team").await.unwrap().is_none());
    assert!(fake.list("v1", "ConfigMap", Some("team")).is_empty());
}

#[tokio::test]
async fn server_side_apply_owns_fields() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let ssa = PatchParams::apply("krake").force();

    // Apply creates (namespace must exist).
    let mut manifest = deployment("web", "nginx:1");
    manifest["metadata"]["labels"]["temporary"] = json!("yes");
    manifest["metadata"]["annotations"] = json!({"a": "1"});
    deployments
        .patch("web", &ssa, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let missing_ns: Api<Deployment> = Api::namespaced(c.clone(), "nowhere");
    let mut elsewhere = manifest.clone();
    elsewhere["metadata"]["namespace"] = json!("nowhere");
    let status = api_status(
        missing_ns
            .patch("web", &ssa, &Patch::Apply(&elsewhere))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    // A manifest naming another namespace than the URL is a bad request.
    let status = api_status(
        missing_ns
            .patch("web", &ssa, &Patch::Apply(&manifest))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 400);

    // Another manager sets a label and adds a sidecar container.
    fake.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"metadata": {"labels": {"owner": "ops"}}}),
    )
    .unwrap();
    let sidecar = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}});
    deployments
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("mesh".into()),
                ..Default::default()
            },
            &Patch::Strategic(&sidecar),
        )
        .await
        .unwrap();

    // Krake applies again without the temporary label and annotation, with a new image.
    let manifest = deployment("web", "nginx:2");
    let applied = deployments
        .patch("web", &ssa, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let labels = applied.metadata.labels.clone().unwrap();
    assert!(!labels.contains_key("temporary"), "{labels:?}");
    assert_eq!(labels.get("owner").map(String::as_str), Some("ops"));
    assert!(applied.metadata.annotations.unwrap_or_default().is_empty());
    let containers = applied.spec.template.spec.unwrap().containers;
    let pairs: Vec<(String, Option<String>)> =
        containers.into_iter().map(|c| (c.name, c.image)).collect();
    assert_eq!(
        pairs,
        vec![
            ("web".to_string(), Some("nginx:2".to_string())),
            ("sidecar".to_string(), Some("envoy".to_string()))
        ]
    );
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"krake".to_string()) && managers.contains(&"kubectl-edit".to_string()),
        "{managers:?}"
    );

    // Without force, changing a field another manager owns is a conflict.
    let mut grab = deployment("web", "nginx:2");
    grab["metadata"]["labels"]["owner"] = json!("krake");
    let status = api_status(
        deployments
            .patch("web", &PatchParams::apply("krake"), &Patch::Apply(&grab))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let forced = deployments
        .patch("web", &ssa, &Patch::Apply(&grab))
        .await
        .unwrap();
    assert_eq!(forced.metadata.labels.unwrap()["owner"], "krake");

    // Apply without a field manager is refused.
    let status = api_status(
        deployments
            .patch("web", &PatchParams::default(), &Patch::Apply(&grab))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);

    // JSON patch works too.
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]))
            .unwrap();
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.spec.replicas, Some(3));
}

#[tokio::test]
async fn status_subresource_is_kept_apart() {
    let fake = FakeCluster::start().await.unwrap();
    fake.kubelet().set_automatic(false);
    let c = client(fake.kubeconfig()).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut body = deployment("apart", "nginx");
    body["status"] = json!({"replicas": 99});
    let created = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        created.status.is_none_or(|s| s.replicas.is_none()),
        "status is reset on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // A status write leaves spec alone and the generation as it is.
    let patch = json!({"spec": {"replicas": 7}, "status": {"readyReplicas": 1}});
    let after = deployments
        .patch_status("apart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(after.spec.replicas, Some(2));
    assert_eq!(after.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(after.metadata.generation, Some(1));

    // A main-resource write leaves status alone and bumps the generation.
    let after = deployments
        .patch("apart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(after.spec.replicas, Some(7));
    assert_eq!(after.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(after.metadata.generation, Some(2));

    // A metadata-only change does not bump it.
    let labels = json!({"metadata": {"labels": {"x": "y"}}});
    let after = deployments
        .patch("apart", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));
}

#[tokio::test]
async fn watcher_sees_changes_and_relists_after_410() {
    let fake = FakeCluster::start().await.unwrap();
    fake.kubelet().set_automatic(false);
    let c = client(fake.kubeconfig()).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut events = watcher::watcher(deployments.clone(), watcher::Config::default()).boxed();

    let mut next = async || -> Event<Deployment> {
        tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitDone));

    fake.create(deployment("w1", "nginx")).unwrap();
    match next().await {
        Event::Apply(d) => assert_eq!(d.metadata.name.as_deref(), Some("w1")),
        other => panic!("{other:?}"),
    }
    fake.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "w1",
        json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    match next().await {
        Event::Apply(d) => assert_eq!(d.spec.replicas, Some(5)),
        other => panic!("{other:?}"),
    }
    assert!(fake.delete("apps/v1", "Deployment", Some("default"), "w1"));
    match next().await {
        Event::Delete(d) => assert_eq!(d.metadata.name.as_deref(), Some("w1")),
        other => panic!("{other:?}"),
    }

    // The cluster goes away and comes back as a restarted API server: the
    // watcher's resume gets 410 and it lists again.
    fake.faults().refuse_connections(true);
    fake.create(deployment("w2", "nginx")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.faults().refuse_connections(false);
    let mut saw_gone = false;
    let relisted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.next().await {
                Some(Ok(Event::InitApply(d))) if d.metadata.name.as_deref() == Some("w2") => {
                    return true;
                }
                Some(Err(watcher::Error::WatchError(s))) if s.code == 410 => saw_gone = true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .expect("relist in time");
    assert!(relisted);
    assert!(saw_gone, "the watcher resumed with a 410 and relisted");

    // A raw watch from an old version gets the ERROR event itself.
    fake.create(deployment("w3", "nginx")).unwrap();
    fake.compact();
    let stream = deployments
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.boxed().next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn node_watcher_sees_conditions_and_bookmarks_flow() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let node = nodes.get("node-1").await.unwrap();
    let conditions = node.status.unwrap().conditions.unwrap();
    for t in [
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    ] {
        let c = conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("{t}"));
        assert!(c.reason.is_some() && c.message.is_some());
        assert_eq!(c.status, if t == "Ready" { "True" } else { "False" });
    }

    let mut events = watcher::watcher(nodes, watcher::Config::default()).boxed();
    let mut saw_init = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .map(Result::unwrap)
    {
        match e {
            Event::InitApply(_) => saw_init = true,
            Event::InitDone => break,
            _ => {}
        }
    }
    assert!(saw_init);
    // Bookmarks keep coming without confusing the watcher (~1 s apart).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fake.set_node_condition("node-1", "Ready", "False", None, None);
    let node = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::Apply(n)) = events.try_next().await.unwrap() {
                return n;
            }
        }
    })
    .await
    .unwrap();
    let ready = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.reason.is_none() && ready.message.is_none());
    fake.add_node("node-2");
    let added = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::Apply(n)) = events.try_next().await.unwrap()
                && n.metadata.name.as_deref() == Some("node-2")
            {
                return true;
            }
        }
    })
    .await
    .unwrap();
    assert!(added);
}

fn crontab_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}
            }]
        }
    })
}

#[tokio::test]
async fn crd_registered_at_run_time_is_discovered_and_served() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let gvk = GroupVersionKind::gvk("stable.example.com", "v1", "CronTab");
    assert!(kube::discovery::pinned_kind(&c, &gvk).await.is_err());

    fake.create(crontab_crd()).unwrap();
    let (resource, caps): (ApiResource, _) = kube::discovery::pinned_kind(&c, &gvk).await.unwrap();
    assert_eq!(resource.plural, "crontabs");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    for discovery in [
        kube::Discovery::new(c.clone()).run().await.unwrap(),
        kube::Discovery::new(c.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        assert!(discovery.has_group("stable.example.com"));
        assert!(discovery.has_group("apps") && discovery.has_group(""));
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
            .unwrap();
        assert_eq!(ar.plural, "deployments");
        assert!(
            caps.subresources
                .iter()
                .any(|(r, _)| r.plural == "deployments/status" || r.plural == "status")
        );
    }
    let aggregated = c.list_api_groups_aggregated().await.unwrap();
    assert!(
        aggregated
            .items
            .iter()
            .any(|g| g.metadata.as_ref().and_then(|m| m.name.as_deref())
                == Some("stable.example.com"))
    );

    // The CRD itself is readable where controllers look for it.
    let crd: Value = c
        .request(
            http::Request::get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "CronTab");

    let crontabs: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &resource);
    let mut events = watcher::watcher(crontabs.clone(), watcher::Config::default()).boxed();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "nightly"}, "spec": {"cronSpec": "* * * * */5"}
    }))
    .unwrap();
    crontabs
        .patch(
            "nightly",
            &PatchParams::apply("krake").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
    let got = crontabs.get("nightly").await.unwrap();
    assert_eq!(got.data["spec"]["cronSpec"], "* * * * */5");
    let saw = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.try_next().await.unwrap() {
                Some(Event::Apply(o) | Event::InitApply(o))
                    if o.metadata.name.as_deref() == Some("nightly") =>
                {
                    return true;
                }
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(saw);
    crontabs
        .delete("nightly", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        fake.get(
            "stable.example.com/v1",
            "CronTab",
            Some("default"),
            "nightly"
        )
        .is_none()
    );

    // Deleting the CRD stops serving the kind.
    assert!(fake.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "crontabs.stable.example.com"
    ));
    assert!(kube::discovery::pinned_kind(&c, &gvk).await.is_err());
}

#[tokio::test]
async fn kubelet_makes_deployments_ready_and_services_get_node_ports() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deployments
        .patch(
            "ready",
            &PatchParams::apply("krake").force(),
            &Patch::Apply(deployment("ready", "nginx")),
        )
        .await
        .unwrap();
    let status = eventually(|| {
        let d = fake.get("apps/v1", "Deployment", Some("default"), "ready")?;
        (d.pointer("/status/readyReplicas")? == 2).then(|| d["status"].clone())
    })
    .await;
    assert_eq!(status["availableReplicas"], 2);
    assert_eq!(status["observedGeneration"], 1);
    let pods = fake.list("v1", "Pod", Some("default"));
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("ready-")
        })
        .collect();
    assert_eq!(owned.len(), 2);
    for p in owned {
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    }

    // A test can pin fewer ready replicas (DEGRADED).
    assert!(fake.kubelet().set_ready_replicas(
        "apps/v1",
        "Deployment",
        Some("default"),
        "ready",
        1
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = deployments.get("ready").await.unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));

    let services: Api<Service> = Api::namespaced(c.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "ready"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    assert!(spec.cluster_ip.is_some_and(|ip| ip.starts_with("10.96.")));
}

#[tokio::test]
async fn faults_refuse_fail_and_garbage() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client_without_retries(fake.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.list(&ListParams::default()).await.unwrap();

    fake.faults().refuse_connections(true);
    let started = std::time::Instant::now();
    let err = cms.list(&ListParams::default()).await.unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    fake.faults().refuse_connections(false);
    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if cms.list(&ListParams::default()).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(recovered);

    fake.faults().fail_requests(Some(503));
    let status = api_status(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    fake.faults().fail_requests(None);
    fake.faults().fail_next(1, 500);
    assert_eq!(api_status(cms.get_opt("x").await.unwrap_err()).code, 500);
    assert!(cms.get_opt("x").await.unwrap().is_none());
    // kube's default client retries a few 503s by itself.
    let retrying: Api<ConfigMap> = Api::namespaced(client(fake.kubeconfig()).await, "default");
    fake.faults().fail_next(2, 503);
    assert!(retrying.get_opt("x").await.unwrap().is_none());

    let before = fake.stats().create();
    let garbage = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{\"metadata\": {\"name\": ".to_vec())
        .unwrap();
    let status = api_status(c.request::<Value>(garbage).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(fake.stats().create(), before + 1);
    assert!(fake.stats().list() >= 2);

    let wrong_method = http::Request::put("/api/v1/namespaces/default/configmaps")
        .body(b"{}".to_vec())
        .unwrap();
    let status = api_status(c.request::<Value>(wrong_method).await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (405, "MethodNotAllowed")
    );

    // Open watches end when the cluster goes away.
    let stream = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let mut stream = stream.boxed();
    fake.faults().refuse_connections(true);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(ended);
}

#[tokio::test]
async fn raw_watch_bookmarks_selectors_and_timeout() {
    let fake = FakeCluster::start().await.unwrap();
    fake.set_bookmark_interval(Duration::from_millis(100));
    let c = client(fake.kubeconfig()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let params = WatchParams::default().labels("tier=a").timeout(3);
    let mut stream = cms.watch(&params, &rv).await.unwrap().boxed();
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "labels": {"tier": "b"}}}))
        .unwrap();
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sel", "labels": {"tier": "a"}}}))
        .unwrap();
    fake.merge_patch(
        "v1",
        "ConfigMap",
        Some("default"),
        "sel",
        json!({"metadata": {"labels": {"tier": "b"}}}),
    )
    .unwrap();
    let current = fake.resource_version().to_string();

    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        match event.unwrap() {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                bookmark_rv = Some(b.metadata.resource_version);
                if seen.len() >= 2 {
                    break;
                }
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    // Leaving the selection is a DELETED event; the other object is never seen.
    assert_eq!(seen, vec!["ADDED sel", "DELETED sel"]);
    assert_eq!(bookmark_rv.as_deref(), Some(current.as_str()));

    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok() && started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn apply_removes_a_list_map_item_it_no_longer_applies() {
    let fake = FakeCluster::start().await.unwrap();
    let c = client(fake.kubeconfig()).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let ssa = PatchParams::apply("krake").force();
    let with_env = |env: Value| {
        let mut d = deployment("web", "nginx");
        d["spec"]["template"]["spec"]["containers"][0]["env"] = env;
        d
    };
    let both =
        with_env(json!([{"name": "MODE", "value": "fast"}, {"name": "DEBUG", "value": "1"}]));
    deployments
        .patch("web", &ssa, &Patch::Apply(&both))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    deployments
        .patch("web", &ssa, &Patch::Apply(&both))
        .await
        .unwrap();
    fake.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"metadata": {"labels": {"team": "ops"}}}),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let one = with_env(json!([{"name": "MODE", "value": "fast"}]));
    let applied = deployments
        .patch("web", &ssa, &Patch::Apply(&one))
        .await
        .unwrap();
    let env = applied.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["MODE"],
        "{:#?}",
        applied.metadata.managed_fields
    );
    assert_eq!(applied.metadata.labels.unwrap()["team"], "ops");
    assert_eq!(applied.spec.replicas, Some(2));
}
