//! Every operation of the typed handles against a real API server, on the
//! embedded store and on etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures::TryStreamExt;
use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams, DynamicApi, Error, ListParams};
use krake_data::kinds::core::{Role, RoleRule, Verb};
use krake_data::kinds::kubernetes::{
    Application, ApplicationState, ClusterBinding, Complete, Shutdown,
};
use krake_data::registry::{self, Subresource};
use krake_data::{Metadata, ResourceRef};
use support::app;

async fn exercise(url: &str) {
    let client = Client::new(url).unwrap();
    assert_eq!(client.version().await.unwrap(), "1.0.1");
    let apps: Api<Application> = Api::namespaced(client.clone(), "testing");
    let others: Api<Application> = Api::namespaced(client.clone(), "other");

    // create, and 409 with the problem body on a second create
    let created = apps.create(&app("web", &[("tier", "web")])).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("testing"));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert_eq!(created.status.state, ApplicationState::Pending);
    let err = apps.create(&app("web", &[])).await.unwrap_err();
    let problem = err.problem().unwrap();
    assert_eq!(problem.status, 409);
    assert_eq!(problem.title.as_deref(), Some("RESOURCE_ALREADY_EXISTS"));
    assert_eq!(
        problem.detail_text(),
        "Application 'web' already exists in namespace 'testing'"
    );
    apps.create(&app("db", &[("tier", "db")])).await.unwrap();
    others
        .create(&app("far", &[("tier", "web")]))
        .await
        .unwrap();

    // get, and 404
    let got = apps.get("web").await.unwrap();
    assert_eq!(got, created);
    let err = apps.get("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.problem().unwrap().title.as_deref(),
        Some("NOT_FOUND_ERROR")
    );

    // list: namespace, all namespaces, label selector, pages
    let names = |list: Vec<Application>| -> Vec<String> {
        list.into_iter().map(|a| a.metadata.name).collect()
    };
    assert_eq!(
        names(apps.list(&ListParams::default()).await.unwrap().items),
        ["db", "web"]
    );
    let all = Api::<Application>::all(client.clone());
    assert_eq!(
        names(all.list(&ListParams::default()).await.unwrap().items),
        ["far", "db", "web"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("tier=web"))
                .await
                .unwrap()
                .items
        ),
        ["far", "web"]
    );
    for i in 0..5 {
        apps.create(&app(&format!("p{i}"), &[])).await.unwrap();
    }
    let page = apps.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(page.metadata.continue_token.is_some());
    let streamed: Vec<String> = apps
        .list_stream(&ListParams::default(), 2)
        .map_ok(|a| a.metadata.name)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, ["db", "p0", "p1", "p2", "p3", "p4", "web"]);

    // update, conditional on the resource_version it carries
    let mut changed = got.clone();
    changed.metadata.labels.insert("env".into(), "prod".into());
    let updated = apps.update(&changed).await.unwrap();
    assert_eq!(updated.metadata.labels["env"], "prod");
    assert_ne!(
        updated.metadata.resource_version,
        got.metadata.resource_version
    );
    let mut stale = got.clone();
    stale.spec.backoff_limit = 7;
    let err = apps.update(&stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    stale.metadata.resource_version = None;
    assert_eq!(apps.update(&stale).await.unwrap().spec.backoff_limit, 7);

    // status, binding, complete, shutdown, retry
    let mut running = apps.get("web").await.unwrap();
    running.status.state = ApplicationState::Running;
    running.status.complete_token = Some("ct".into());
    running.status.shutdown_token = Some("st".into());
    let running = apps.status(&running).await.unwrap();
    assert_eq!(running.status.state, ApplicationState::Running);
    let cluster = ResourceRef::new("kubernetes", "Cluster", Some("testing".into()), "c1");
    let bound = apps
        .binding("web", &ClusterBinding::new(cluster.clone()))
        .await
        .unwrap();
    assert_eq!(bound.status.scheduled_to.as_ref(), Some(&cluster));
    assert!(bound.metadata.owners.contains(&cluster));
    let err = apps.retry("web").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.problem()
            .unwrap()
            .detail_text()
            .contains("No migration or deletion retry needed"),
        "{err:?}"
    );
    let err = apps
        .complete("web", &Complete::new("wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    let shut = apps.shutdown("web", &Shutdown::new("st")).await.unwrap();
    assert_eq!(shut.metadata.name, "web");
    let completed = apps.complete("web", &Complete::new("ct")).await.unwrap();
    assert_eq!(completed.status.state, ApplicationState::ReadyForAction);
    assert!(completed.metadata.deleted.is_some());

    // delete (marks), force delete (removes)
    let marked = apps.delete("db", &DeleteParams::default()).await.unwrap();
    assert!(marked.metadata.deleted.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .contains(&"cascade_deletion".to_owned())
    );
    assert!(apps.get("db").await.is_ok());
    apps.delete("db", &DeleteParams::force()).await.unwrap();
    assert!(apps.get("db").await.unwrap_err().is_not_found());

    // a global kind, and the untyped handle over the registry
    let roles: Api<Role> = Api::all(client.clone());
    let role = Role {
        api: "core".into(),
        kind: "Role".into(),
        metadata: Metadata::named("reader"),
        rules: vec![RoleRule {
            api: "kubernetes".into(),
            namespaces: vec!["testing".into()],
            resources: vec!["applications".into()],
            verbs: vec![Verb::Get, Verb::List],
        }],
    };
    let created = roles.create(&role).await.unwrap();
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(roles.get("reader").await.unwrap().rules, role.rules);
    let kind = registry::by_plural("core", "roles").unwrap();
    let dynamic = DynamicApi::new(client.clone(), kind, Some("ignored"));
    let listed = dynamic.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0]["metadata"]["name"], "reader");
    let err = dynamic
        .subresource(Subresource::Binding, "reader", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    // across all namespaces, object operations take the object's namespace
    let mut elsewhere = app("moved", &[]);
    elsewhere.metadata.namespace = Some("third".into());
    let created = all.create(&elsewhere).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("third"));
    // and get/delete, which have only a name, need one
    let err = all.get("web").await.unwrap_err();
    assert!(matches!(err, Error::NamespaceRequired { .. }), "{err:?}");
    // unreachable servers are transport errors
    let dead = Client::new("http://127.0.0.1:1").unwrap();
    let err = dead.version().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)) && err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_the_embedded_store() {
    let server = TestServer::embedded().await;
    exercise(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    exercise(&server.url()).await;
}
