//! Krake's role-based access control, kept in memory.
//!
//! [`RbacPolicy`] is the decision: a request is allowed if a rule of a
//! [`Role`] bound to the user (through a [`RoleBinding`]) matches its API
//! (or `""`), resource (the plural, or `<plural>/<sub>` for sub-operations,
//! or `""`), verb and namespace (or `""`). Roles only grant. Anonymous
//! requests get 401, everything not granted 403.
//!
//! Two of Krake's holes are closed here:
//! - a list or watch across all namespaces shows only the namespaces the
//!   user may `list` in ([`Access::Namespaces`]); a rule with the wildcard
//!   namespace, or one granting the `list_all` verb, shows all of them;
//! - a global kind (Role, GlobalCloud, ...) needs a rule with the wildcard
//!   namespace `""`, not just any rule.
//!
//! [`RbacAuthorizer`] keeps the policy current without reading the store per
//! request: it lists Roles and RoleBindings once, then follows their changes
//! through the API's [`WatchHub`], rebuilding the policy on every change
//! (within milliseconds). A Role or RoleBinding whose deletion was requested
//! stops counting at once, even while finalizers keep it. If the store goes away it keeps the last policy
//! and resynchronises when it is back; before the first load every request
//! gets 503.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use futures::StreamExt;
use krake_data::kinds::core::{ROLE, ROLE_BINDING, Role, RoleBinding, RoleRule, Verb};
use krake_data::{KindInfo, WatchEventType};
use krake_store::{ListOptions, Store};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, AccessRequest, Authorizer, Scope, User};
use crate::object;
use crate::problem::ApiError;
use crate::watch_hub::{HubError, WatchHub, WatchItem};

/// The wildcard of rules.
const ANY: &str = "";

/// The permissions of every user, computed from Roles and RoleBindings.
#[derive(Debug, Default, Clone)]
pub struct RbacPolicy {
    /// The rules of the roles bound to each user.
    rules: HashMap<String, Vec<RoleRule>>,
    /// The sorted names of the roles bound to each user.
    roles: HashMap<String, Vec<String>>,
}

impl RbacPolicy {
    /// The policy of these roles and bindings. A binding naming a missing
    /// role grants nothing (but the name still shows in [`Self::roles_of`]).
    pub fn new<'a>(
        roles: impl IntoIterator<Item = &'a Role>,
        bindings: impl IntoIterator<Item = &'a RoleBinding>,
    ) -> Self {
        let roles: HashMap<&str, &Role> = roles
            .into_iter()
            .map(|role| (role.metadata.name.as_str(), role))
            .collect();
        let mut names: HashMap<String, BTreeSet<String>> = HashMap::new();
        for binding in bindings {
            for user in &binding.users {
                names
                    .entry(user.clone())
                    .or_default()
                    .extend(binding.roles.iter().cloned());
            }
        }
        let rules = names
            .iter()
            .map(|(user, bound)| {
                let rules = bound
                    .iter()
                    .filter_map(|name| roles.get(name.as_str()))
                    .flat_map(|role| role.rules.iter().cloned())
                    .collect();
                (user.clone(), rules)
            })
            .collect();
        let roles = names
            .into_iter()
            .map(|(user, bound)| (user, bound.into_iter().collect()))
            .collect();
        RbacPolicy { rules, roles }
    }

    /// The sorted names of the roles bound to `user`.
    pub fn roles_of(&self, user: &str) -> Vec<String> {
        self.roles.get(user).cloned().unwrap_or_default()
    }

    /// Decides on one request.
    pub fn decide(&self, user: &User, request: &AccessRequest<'_>) -> Result<Access, ApiError> {
        if user.is_anonymous() {
            return Err(ApiError::http(StatusCode::UNAUTHORIZED));
        }
        let rules = self
            .rules
            .get(user.name())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let covers = |rule: &RoleRule| {
            (rule.api == ANY || rule.api == request.api)
                && rule
                    .resources
                    .iter()
                    .any(|r| r == ANY || r == request.resource)
        };
        let mut granting = rules
            .iter()
            .filter(|rule| covers(rule) && rule.verbs.contains(&request.verb));
        let wildcard = |rule: &RoleRule| rule.namespaces.iter().any(|ns| ns == ANY);
        let allowed = match request.scope {
            Scope::Namespace(namespace) => granting
                .any(|rule| wildcard(rule) || rule.namespaces.iter().any(|ns| ns == namespace)),
            Scope::Global => granting.any(wildcard),
            Scope::AllNamespaces => {
                let list_all = request.verb == Verb::List
                    && rules
                        .iter()
                        .any(|rule| covers(rule) && rule.verbs.contains(&Verb::ListAll));
                let mut namespaces = BTreeSet::new();
                for rule in granting {
                    if wildcard(rule) || list_all {
                        return Ok(Access::All);
                    }
                    namespaces.extend(rule.namespaces.iter().cloned());
                }
                if list_all {
                    return Ok(Access::All);
                }
                if namespaces.is_empty() {
                    return Err(ApiError::http(StatusCode::FORBIDDEN));
                }
                return Ok(Access::Namespaces(Arc::new(namespaces)));
            }
        };
        if allowed {
            Ok(Access::All)
        } else {
            Err(ApiError::http(StatusCode::FORBIDDEN))
        }
    }
}

/// The RBAC authorizer: an [`RbacPolicy`] kept current by watching the
/// store's Roles and RoleBindings through the watch hub.
#[derive(Debug)]
pub struct RbacAuthorizer {
    policy: RwLock<Option<Arc<RbacPolicy>>>,
    loaded: tokio::sync::watch::Sender<u64>,
}

impl RbacAuthorizer {
    /// An authorizer that starts loading Roles and RoleBindings from `store`
    /// and follows their changes through `hub` until `shutdown`.
    pub fn spawn(store: Arc<dyn Store>, hub: WatchHub, shutdown: CancellationToken) -> Arc<Self> {
        let authorizer = Arc::new(RbacAuthorizer {
            policy: RwLock::new(None),
            loaded: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(sync(authorizer.clone(), store, hub, shutdown));
        authorizer
    }

    /// An authorizer with a fixed policy (no store; for embedding and tests).
    pub fn fixed(policy: RbacPolicy) -> Self {
        RbacAuthorizer {
            policy: RwLock::new(Some(Arc::new(policy))),
            loaded: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The current policy, `None` before the first load.
    pub fn policy(&self) -> Option<Arc<RbacPolicy>> {
        self.policy.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// How many times the policy was rebuilt (0 before the first load).
    pub fn generation(&self) -> u64 {
        *self.loaded.borrow()
    }

    /// Waits until the policy was loaded at least once, at most `timeout`.
    /// Returns whether it was.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut receiver = self.loaded.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|&generation| generation > 0))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    fn publish(&self, policy: RbacPolicy) {
        if let Ok(mut slot) = self.policy.write() {
            *slot = Some(Arc::new(policy));
        }
        self.loaded.send_modify(|generation| *generation += 1);
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, user: &User, request: &AccessRequest<'_>) -> Result<Access, ApiError> {
        match self.policy() {
            Some(policy) => policy.decide(user, request),
            None => Err(ApiError::Unavailable(
                "the RBAC roles are not loaded yet".into(),
            )),
        }
    }

    fn roles_of(&self, user: &User) -> Option<Vec<String>> {
        self.policy().map(|policy| policy.roles_of(user.name()))
    }

    fn generation(&self) -> u64 {
        RbacAuthorizer::generation(self)
    }
}

/// The Roles and RoleBindings as last seen, by store key.
#[derive(Debug, Default)]
struct Objects {
    roles: HashMap<String, Role>,
    bindings: HashMap<String, RoleBinding>,
}

impl Objects {
    fn policy(&self) -> RbacPolicy {
        RbacPolicy::new(self.roles.values(), self.bindings.values())
    }

    /// Applies one change of a Role (`is_role`) or a RoleBinding.
    fn apply(&mut self, (is_role, item): (bool, HubItem)) -> Result<(), ApiError> {
        let item = item.map_err(|err| ApiError::Unavailable(err.to_string()))?;
        let deleted = item.event_type == WatchEventType::Deleted;
        if is_role {
            apply(&mut self.roles, &item.key, &item.object, deleted);
        } else {
            apply(&mut self.bindings, &item.key, &item.object, deleted);
        }
        Ok(())
    }
}

type HubItem = Result<Arc<WatchItem>, HubError>;

/// Lists, then follows, until shut down; after a failure waits (backoff up
/// to 5 s) and starts again with a fresh list.
async fn sync(
    authorizer: Arc<RbacAuthorizer>,
    store: Arc<dyn Store>,
    hub: WatchHub,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            outcome = follow(&authorizer, store.as_ref(), &hub) => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                tracing::warn!(error = %err, "RBAC: cannot follow roles and bindings; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One list-then-watch round; returns when the watch ends.
async fn follow(
    authorizer: &RbacAuthorizer,
    store: &dyn Store,
    hub: &WatchHub,
) -> Result<(), ApiError> {
    let mut objects = Objects::default();
    let roles_revision = load(store, &ROLE, &mut objects.roles).await?;
    let bindings_revision = load(store, &ROLE_BINDING, &mut objects.bindings).await?;
    let roles = hub
        .subscribe(&ROLE.prefix(None), Some(roles_revision))
        .await?
        .map(|item| (true, item));
    let bindings = hub
        .subscribe(&ROLE_BINDING.prefix(None), Some(bindings_revision))
        .await?
        .map(|item| (false, item));
    authorizer.publish(objects.policy());
    tracing::debug!(
        roles = objects.roles.len(),
        bindings = objects.bindings.len(),
        "RBAC: policy loaded"
    );
    let mut changes = futures::stream::select(roles, bindings);
    while let Some(change) = changes.next().await {
        objects.apply(change)?;
        // Apply whatever else is already waiting before rebuilding once.
        while let Some(Some(change)) = futures::FutureExt::now_or_never(changes.next()) {
            objects.apply(change)?;
        }
        authorizer.publish(objects.policy());
    }
    Ok(())
}

/// Lists every object of `kind` into `into`; returns the list's revision.
async fn load<T: DeserializeOwned>(
    store: &dyn Store,
    kind: &KindInfo,
    into: &mut HashMap<String, T>,
) -> Result<i64, ApiError> {
    let page = store
        .list(&kind.prefix(None), &ListOptions::default())
        .await?;
    for kv in &page.items {
        apply(into, &kv.key, &object::decode_kv(kv)?, false);
    }
    Ok(page.revision)
}

fn apply<T: DeserializeOwned>(
    into: &mut HashMap<String, T>,
    key: &str,
    object: &serde_json::Value,
    deleted: bool,
) {
    // An object being deleted grants nothing any more, even while its
    // finalizers keep it in the store.
    if deleted || object::is_deleted(object) {
        into.remove(key);
        return;
    }
    match serde_json::from_value(object.clone()) {
        Ok(value) => {
            into.insert(key.to_owned(), value);
        }
        Err(err) => {
            tracing::warn!(key, error = %err, "RBAC: ignoring an object that does not decode");
            into.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use krake_data::metadata::Metadata;

    use super::*;

    fn rule(api: &str, resources: &[&str], namespaces: &[&str], verbs: &[Verb]) -> RoleRule {
        RoleRule {
            api: api.into(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.to_vec(),
        }
    }

    fn request<'a>(resource: &'a str, verb: Verb, scope: Scope<'a>) -> AccessRequest<'a> {
        AccessRequest {
            api: "kubernetes",
            resource,
            verb,
            scope,
        }
    }

    fn policy() -> RbacPolicy {
        let roles = [
            Role::new(
                Metadata::named("reader-a"),
                vec![rule(
                    "kubernetes",
                    &["applications"],
                    &["a"],
                    &[Verb::Get, Verb::List],
                )],
            ),
            Role::new(
                Metadata::named("reader-b"),
                vec![rule("", &["applications"], &["b"], &[Verb::List])],
            ),
            Role::new(
                Metadata::named("admin"),
                vec![rule(
                    "",
                    &[""],
                    &[""],
                    &[
                        Verb::Create,
                        Verb::List,
                        Verb::Get,
                        Verb::Update,
                        Verb::Delete,
                    ],
                )],
            ),
            Role::new(
                Metadata::named("lister"),
                vec![rule("kubernetes", &["clusters"], &["x"], &[Verb::ListAll])],
            ),
        ];
        let bindings = [
            RoleBinding::new(
                Metadata::named("b1"),
                vec!["alice".into()],
                vec!["reader-a".into(), "reader-b".into()],
            ),
            RoleBinding::new(
                Metadata::named("b2"),
                vec!["root".into()],
                vec!["admin".into(), "missing".into()],
            ),
            RoleBinding::new(
                Metadata::named("b3"),
                vec!["carol".into()],
                vec!["lister".into()],
            ),
        ];
        RbacPolicy::new(&roles, &bindings)
    }

    #[test]
    fn namespaced_requests_need_a_matching_namespace() {
        let policy = policy();
        let alice = User::new("alice");
        let apps = "applications";
        assert_eq!(
            policy
                .decide(&alice, &request(apps, Verb::Get, Scope::Namespace("a")))
                .ok(),
            Some(Access::All)
        );
        let err = policy
            .decide(&alice, &request(apps, Verb::Get, Scope::Namespace("b")))
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert!(
            policy
                .decide(&alice, &request(apps, Verb::Delete, Scope::Namespace("a")))
                .is_err()
        );
        // A sub-operation is its own resource.
        assert!(
            policy
                .decide(
                    &alice,
                    &request("applications/status", Verb::Get, Scope::Namespace("a"))
                )
                .is_err()
        );
    }

    #[test]
    fn listing_all_namespaces_shows_only_allowed_ones() {
        let policy = policy();
        let alice = User::new("alice");
        let access = policy
            .decide(
                &alice,
                &request("applications", Verb::List, Scope::AllNamespaces),
            )
            .unwrap();
        let expected = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        assert_eq!(access, Access::Namespaces(Arc::new(expected)));
        assert_eq!(
            policy
                .decide(
                    &User::new("root"),
                    &request("applications", Verb::List, Scope::AllNamespaces)
                )
                .ok(),
            Some(Access::All)
        );
        // list_all grants every namespace.
        assert_eq!(
            policy
                .decide(
                    &User::new("carol"),
                    &request("clusters", Verb::List, Scope::AllNamespaces)
                )
                .ok(),
            Some(Access::All)
        );
        assert!(
            policy
                .decide(
                    &User::new("carol"),
                    &request("clusters", Verb::List, Scope::Namespace("x"))
                )
                .is_err()
        );
    }

    #[test]
    fn global_kinds_need_the_wildcard_namespace() {
        let policy = policy();
        assert!(
            policy
                .decide(
                    &User::new("alice"),
                    &request("applications", Verb::List, Scope::Global)
                )
                .is_err()
        );
        assert_eq!(
            policy
                .decide(
                    &User::new("root"),
                    &request("roles", Verb::Create, Scope::Global)
                )
                .ok(),
            Some(Access::All)
        );
    }

    #[test]
    fn anonymous_is_401_and_strangers_403() {
        let policy = policy();
        let get = request("applications", Verb::Get, Scope::Namespace("a"));
        let anonymous = policy
            .decide(&User::new(crate::auth::ANONYMOUS), &get)
            .unwrap_err();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let stranger = policy.decide(&User::new("mallory"), &get).unwrap_err();
        assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn roles_of_are_sorted_names_from_bindings() {
        let policy = policy();
        assert_eq!(policy.roles_of("root"), ["admin", "missing"]);
        assert_eq!(policy.roles_of("alice"), ["reader-a", "reader-b"]);
        assert!(policy.roles_of("nobody").is_empty());
    }
}
