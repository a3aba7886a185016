//! Handles on one kind: [`Api`] for typed code, [`DynamicApi`] for code that
//! picks the kind at run time (krakectl). Both are generic over the kind
//! registry: every operation derives its URL from the kind's
//! [`KindInfo`], so there is no per-kind code.

use std::marker::PhantomData;

use futures::Stream;
use krake_data::kinds::infrastructure::CloudBinding;
use krake_data::kinds::kubernetes::{Application, Cluster, ClusterBinding, Complete, Shutdown};
use krake_data::kinds::openstack::{MagnumCluster, MagnumClusterBinding};
use krake_data::registry::{HasStatus, Subresource};
use krake_data::{KindInfo, Resource, ResourceList};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Answer, Client, Query};
use crate::error::{Error, Result};
use crate::watch::{self, WatchConfig, WatchEvent};

/// Options of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ListParams {
    /// A label selector (`env=prod,tier in (web, db)`): Krake's label
    /// constraint language, comma-separated, all must match.
    pub label_selector: Option<String>,
    /// The page size; `None` asks for everything at once.
    pub limit: Option<usize>,
    /// The continue token of the previous page.
    pub continue_token: Option<String>,
}

impl ListParams {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// At most `limit` objects per page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    fn query(&self) -> Query {
        let mut query = Query::new();
        if let Some(selector) = &self.label_selector {
            query.push(("label_selector", selector.clone()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(token) = &self.continue_token {
            query.push(("continue", token.clone()));
        }
        query
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct DeleteParams {
    /// Remove the object from the store at once, without waiting for its
    /// finalizers (applications and clusters only: Krake's `?force=True`).
    pub force: bool,
}

impl DeleteParams {
    /// A forced delete.
    pub fn force() -> Self {
        DeleteParams { force: true }
    }
}

/// A handle on the objects of one kind chosen at run time, as JSON values.
///
/// ```no_run
/// # async fn example(client: krake_client::Client) -> Result<(), krake_client::Error> {
/// use krake_client::DynamicApi;
/// use krake_data::registry;
///
/// let kind = registry::by_plural("kubernetes", "clusters").unwrap();
/// let clusters = DynamicApi::new(client, kind, Some("testing"));
/// for cluster in clusters.list(&Default::default()).await?.items {
///     println!("{}", cluster["metadata"]["name"]);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DynamicApi {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
}

impl DynamicApi {
    /// A handle on `kind` in `namespace`; `None` means all namespaces for a
    /// namespaced kind (list and watch only), and is the only scope of
    /// global kinds (whose handles ignore any namespace).
    pub fn new(client: Client, kind: &'static KindInfo, namespace: Option<&str>) -> Self {
        let namespace = if kind.is_namespaced() {
            namespace.map(str::to_owned)
        } else {
            None
        };
        DynamicApi {
            client,
            kind,
            namespace,
        }
    }

    /// The kind.
    pub fn kind(&self) -> &'static KindInfo {
        self.kind
    }

    /// The namespace (`None`: all namespaces, or a global kind).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of an object operation: the handle's, else the object's.
    fn object_namespace<'a>(&'a self, object: Option<&'a Value>) -> Result<Option<&'a str>> {
        if !self.kind.is_namespaced() {
            return Ok(None);
        }
        if let Some(namespace) = &self.namespace {
            return Ok(Some(namespace));
        }
        object
            .and_then(|o| o.pointer("/metadata/namespace"))
            .and_then(Value::as_str)
            .map(Some)
            .ok_or(Error::NamespaceRequired {
                kind: self.kind.kind,
            })
    }

    fn object_path(&self, name: &str, object: Option<&Value>) -> Result<String> {
        let namespace = self.object_namespace(object)?;
        Ok(self.kind.object_path(namespace, name))
    }

    fn collection_path(&self) -> String {
        self.kind.collection_path(self.namespace.as_deref())
    }

    /// `POST` a new object; answers the stored object.
    pub async fn create(&self, object: &Value) -> Result<Value> {
        let namespace = self.object_namespace(Some(object))?;
        let path = self.kind.collection_path(namespace);
        self.client
            .send(Method::POST, &path, &Query::new(), Some(object))
            .await
    }

    /// `GET` one object.
    pub async fn get(&self, name: &str) -> Result<Value> {
        let path = self.object_path(name, None)?;
        self.client
            .send(Method::GET, &path, &Query::new(), None)
            .await
    }

    /// `GET` the collection: one page (or everything without a limit).
    pub async fn list(&self, params: &ListParams) -> Result<ResourceList<Value>> {
        self.list_as(params).await
    }

    pub(crate) async fn list_as<T: DeserializeOwned>(
        &self,
        params: &ListParams,
    ) -> Result<ResourceList<T>> {
        self.client
            .send(Method::GET, &self.collection_path(), &params.query(), None)
            .await
    }

    /// Every object, page by page (`page_size` objects per request), as one
    /// stream. Against a server without pagination the first page is all.
    pub fn list_stream(
        &self,
        params: &ListParams,
        page_size: usize,
    ) -> impl Stream<Item = Result<Value>> + Send + 'static {
        let api = self.clone();
        let params = params.clone().limit(page_size.max(1));
        let pages = futures::stream::try_unfold(Some(params), move |params| {
            let api = api.clone();
            async move {
                let Some(params) = params else {
                    return Ok(None);
                };
                let page = api.list(&params).await?;
                let next = page
                    .metadata
                    .continue_token
                    .clone()
                    .filter(|token| !token.is_empty())
                    .map(|token| ListParams {
                        continue_token: Some(token),
                        ..params
                    });
                let items = futures::stream::iter(page.items.into_iter().map(Ok));
                Ok::<_, Error>(Some((items, next)))
            }
        });
        futures::TryStreamExt::try_flatten(pages)
    }

    /// `PUT` an object (spec and metadata). If it carries a
    /// `metadata.resource_version`, the update is conditional: a stale one
    /// answers 409 ([`Error::is_conflict`]).
    pub async fn update(&self, object: &Value) -> Result<Value> {
        let name = name_of(object)?;
        let path = self.object_path(name, Some(object))?;
        self.client
            .send(Method::PUT, &path, &Query::new(), Some(object))
            .await
    }

    /// `DELETE` an object: marks it deleted (or removes it at once with
    /// [`DeleteParams::force`]); answers the object.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<Value> {
        let path = self.object_path(name, None)?;
        let mut query = Query::new();
        if params.force {
            query.push(("force", "True".to_owned()));
        }
        self.client.send(Method::DELETE, &path, &query, None).await
    }

    /// `PUT .../{name}/<operation>` with `body` (`None`: no body).
    pub async fn subresource(
        &self,
        operation: Subresource,
        name: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        if self.kind.subresource(operation).is_none() {
            return Err(Error::Unsupported {
                kind: self.kind.kind,
                operation: operation.as_str(),
            });
        }
        let path = format!("{}/{}", self.object_path(name, body)?, operation.as_str());
        self.client
            .send(Method::PUT, &path, &Query::new(), body)
            .await
    }

    /// A watch of the collection that survives disconnects; see [`crate::watch`].
    pub fn watch(
        &self,
        config: WatchConfig,
    ) -> impl Stream<Item = Result<WatchEvent<Value>>> + Send + 'static {
        watch::watch_values(self.clone(), config)
    }

    /// Opens one raw watch request (used by the watcher).
    pub(crate) async fn open_watch(
        &self,
        config: &WatchConfig,
        resource_version: Option<&str>,
    ) -> Result<Answer> {
        let mut query: Query = vec![("watch", String::new())];
        if let Some(heartbeat) = config.heartbeat {
            query.push(("heartbeat", heartbeat.as_secs().max(1).to_string()));
        }
        if let Some(selector) = &config.label_selector {
            query.push(("label_selector", selector.clone()));
        }
        if let Some(version) = resource_version {
            query.push(("resource_version", version.to_owned()));
        }
        self.client
            .start(
                Method::GET,
                &self.collection_path(),
                &query,
                None,
                Some(self.client.watch_headers_timeout(config.idle_timeout())),
            )
            .await
    }
}

fn name_of(object: &Value) -> Result<&str> {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidObject("the object has no metadata.name".to_owned()))
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(Error::Decode)
}

/// A typed handle on the objects of kind `K` in one namespace (or across
/// all of them), with every operation the kind's registry entry serves.
///
/// ```no_run
/// # async fn example() -> Result<(), krake_client::Error> {
/// use krake_client::{Api, Client, DeleteParams, ListParams};
/// use krake_data::kinds::kubernetes::{Application, ApplicationSpec};
/// use krake_data::Metadata;
///
/// let client = Client::new("http://localhost:8080")?;
/// let apps: Api<Application> = Api::namespaced(client.clone(), "testing");
///
/// // create
/// let manifest = serde_json::from_value(serde_json::json!([
///     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
/// ])).unwrap();
/// let app = Application::new(Metadata::named("echo"), ApplicationSpec::from_manifest(manifest));
/// let mut app = apps.create(&app).await?;
///
/// // get, update (conditional on the resource_version it carries)
/// app.metadata.labels.insert("tier".into(), "web".into());
/// let app = apps.update(&app).await?;
///
/// // list: one namespace, all namespaces, a label selector
/// let web = apps.list(&ListParams::default().labels("tier=web")).await?;
/// let everywhere = Api::<Application>::all(client).list(&ListParams::default()).await?;
///
/// // delete, or force
/// apps.delete("echo", &DeleteParams::default()).await?;
/// apps.delete("echo", &DeleteParams::force()).await?;
/// # let _ = (app, web, everywhere);
/// # Ok(())
/// # }
/// ```
pub struct Api<K> {
    inner: DynamicApi,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            inner: self.inner.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Api").field(&self.inner).finish()
    }
}

impl<K: Resource> Api<K> {
    /// The objects in `namespace` (global kinds ignore it).
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Self::from_dynamic(DynamicApi::new(client, K::INFO, Some(namespace)))
    }

    /// The objects of every namespace, or of a global kind. Object
    /// operations on a namespaced kind take the namespace from the object,
    /// and `get`/`delete` need [`Api::namespaced`].
    pub fn all(client: Client) -> Self {
        Self::from_dynamic(DynamicApi::new(client, K::INFO, None))
    }

    fn from_dynamic(inner: DynamicApi) -> Self {
        Api {
            inner,
            kind: PhantomData,
        }
    }

    /// The untyped handle underneath.
    pub fn dynamic(&self) -> &DynamicApi {
        &self.inner
    }

    /// Creates `object`; answers it as stored (uid, timestamps, default
    /// status and `resource_version` filled in). 409 if it exists.
    ///
    /// ```no_run
    /// # async fn example(client: krake_client::Client) -> Result<(), krake_client::Error> {
    /// use krake_client::Api;
    /// use krake_data::kinds::core::Role;
    /// use krake_data::Metadata;
    ///
    /// let roles: Api<Role> = Api::all(client); // a global kind
    /// let role = Role { api: "core".into(), kind: "Role".into(), metadata: Metadata::named("none"), rules: vec![] };
    /// match roles.create(&role).await {
    ///     Ok(created) => println!("uid {:?}", created.metadata.uid),
    ///     Err(err) if err.is_conflict() => println!("already there"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create(&self, object: &K) -> Result<K> {
        decode(self.inner.create(&Client::encode(object)?).await?)
    }

    /// Reads one object. 404 ([`Error::is_not_found`]) if it does not exist.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// match apps.get("echo").await {
    ///     Ok(app) => println!("{:?}", app.status.state),
    ///     Err(err) if err.is_not_found() => println!("gone"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, name: &str) -> Result<K> {
        decode(self.inner.get(name).await?)
    }

    /// Lists objects: one page with [`ListParams::limit`], else all of them.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_client::ListParams;
    /// let page = apps.list(&ListParams::default().labels("env=prod").limit(10)).await?;
    /// println!("{} items, more: {:?}", page.items.len(), page.metadata.continue_token);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list(&self, params: &ListParams) -> Result<ResourceList<K>> {
        self.inner.list_as(params).await
    }

    /// Every object as a stream, fetched `page_size` at a time from one
    /// consistent snapshot.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use futures::TryStreamExt;
    /// let names: Vec<String> = apps
    ///     .list_stream(&Default::default(), 100)
    ///     .map_ok(|app| app.metadata.name)
    ///     .try_collect()
    ///     .await?;
    /// # let _ = names;
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_stream(
        &self,
        params: &ListParams,
        page_size: usize,
    ) -> impl Stream<Item = Result<K>> + Send + 'static {
        futures::StreamExt::map(self.inner.list_stream(params, page_size), |item| {
            item.and_then(decode)
        })
    }

    /// Replaces the object's spec and metadata. When `object` carries the
    /// `metadata.resource_version` it was read with, the update only succeeds
    /// if nobody changed it since (else 409); set it to `None` to overwrite.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// loop {
    ///     let mut app = apps.get("echo").await?;
    ///     app.spec.backoff_limit = 3;
    ///     match apps.update(&app).await {
    ///         Err(err) if err.is_conflict() => continue, // changed meanwhile: read again
    ///         other => break other.map(drop),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn update(&self, object: &K) -> Result<K> {
        decode(self.inner.update(&Client::encode(object)?).await?)
    }

    /// Deletes an object (marks it; with `force`, removes it at once).
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_client::DeleteParams;
    /// let marked = apps.delete("echo", &DeleteParams::default()).await?;
    /// assert!(marked.metadata.deleted.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<K> {
        decode(self.inner.delete(name, params).await?)
    }

    /// A watch that survives disconnects and 410s; see [`crate::watch`].
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use futures::StreamExt;
    /// use krake_client::{WatchConfig, WatchEvent};
    /// let mut events = std::pin::pin!(apps.watch(WatchConfig::default()));
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         WatchEvent::Restarted(all) => println!("{} objects", all.len()),
    ///         WatchEvent::Added(app) | WatchEvent::Modified(app) => println!("{}", app.metadata.name),
    ///         WatchEvent::Deleted(app) => println!("{} gone", app.metadata.name),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(
        &self,
        config: WatchConfig,
    ) -> impl Stream<Item = Result<WatchEvent<K>>> + Send + 'static {
        futures::StreamExt::map(self.inner.watch(config), |event| {
            event.and_then(|event| event.try_map(decode))
        })
    }

    async fn operation<B: Serialize>(
        &self,
        operation: Subresource,
        name: &str,
        body: Option<&B>,
    ) -> Result<K> {
        let body = body.map(Client::encode).transpose()?;
        decode(
            self.inner
                .subresource(operation, name, body.as_ref())
                .await?,
        )
    }

    /// Completes an application's job (`/complete`, with the token from its
    /// status). 401 with a wrong token.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_data::kinds::kubernetes::Complete;
    /// let app = apps.get("job").await?;
    /// let token = app.status.complete_token.clone().unwrap_or_default();
    /// apps.complete("job", &Complete::new(token)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn complete(&self, name: &str, body: &Complete) -> Result<K> {
        self.operation(Subresource::Complete, name, Some(body))
            .await
    }

    /// Reports an application's graceful shutdown as done (`/shutdown`).
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_data::kinds::kubernetes::Shutdown;
    /// apps.shutdown("web", &Shutdown::new("the-shutdown-token")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, name: &str, body: &Shutdown) -> Result<K> {
        self.operation(Subresource::Shutdown, name, Some(body))
            .await
    }

    /// Retries a failed migration or deletion of a DEGRADED application
    /// (`/retry`); 400 in any other state.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// apps.retry("web").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry(&self, name: &str) -> Result<K> {
        self.operation::<Value>(Subresource::Retry, name, None)
            .await
    }
}

impl<K: HasStatus> Api<K> {
    /// Replaces the observed state (`/status`, the body is the whole object).
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_data::kinds::kubernetes::ApplicationState;
    /// let mut app = apps.get("echo").await?;
    /// app.status.state = ApplicationState::Running;
    /// apps.status(&app).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self, object: &K) -> Result<K> {
        let name = object.metadata().name.clone();
        self.operation(Subresource::Status, &name, Some(object))
            .await
    }
}

/// A kind that can be bound (`/binding`) and the body it is bound with.
pub trait Bindable: Resource {
    /// The binding body: [`ClusterBinding`] for applications,
    /// [`CloudBinding`] for clusters, [`MagnumClusterBinding`] for Magnum
    /// clusters.
    type Binding: Serialize + DeserializeOwned + Send + Sync;
}

impl Bindable for Application {
    type Binding = ClusterBinding;
}

impl Bindable for Cluster {
    type Binding = CloudBinding;
}

impl Bindable for MagnumCluster {
    type Binding = MagnumClusterBinding;
}

impl<K: Bindable> Api<K> {
    /// Binds an object (`/binding`): an application to a cluster, a cluster
    /// to a cloud, a Magnum cluster to a project.
    ///
    /// ```no_run
    /// # async fn example(apps: krake_client::Api<krake_data::kinds::kubernetes::Application>) -> Result<(), krake_client::Error> {
    /// use krake_data::kinds::kubernetes::ClusterBinding;
    /// use krake_data::ResourceRef;
    /// let cluster = ResourceRef::new("kubernetes", "Cluster", Some("testing".into()), "c1");
    /// let app = apps.binding("echo", &ClusterBinding::new(cluster)).await?;
    /// assert!(app.status.scheduled_to.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn binding(&self, name: &str, body: &K::Binding) -> Result<K> {
        self.operation(Subresource::Binding, name, Some(body)).await
    }
}
