//! Who is asking, and may they: the [`User`] of a request, the
//! [`AccessRequest`] a handler makes for it, and the [`Authorizer`] that
//! decides. Authentication (finding the user) lives in
//! [`authentication`](crate::authentication); Krake's RBAC in
//! [`rbac`](crate::rbac).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use krake_data::kinds::core::Verb;

use crate::config::AuthorizationMode;
use crate::problem::ApiError;

/// The user name of unauthenticated requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// The authenticated user of a request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub Arc<str>);

impl User {
    /// A user of this name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        User(name.into())
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// True for `system:anonymous`.
    pub fn is_anonymous(&self) -> bool {
        self.name() == ANONYMOUS
    }
}

/// Where a request acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One namespace (a namespaced kind's collection or object).
    Namespace(&'a str),
    /// A global kind (Role, GlobalCloud, ...): no namespace at all.
    Global,
    /// A namespaced kind across all namespaces (list-all and watch-all).
    AllNamespaces,
}

/// One access decision to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The API group.
    pub api: &'a str,
    /// The plural, or `<plural>/<sub-operation>`.
    pub resource: &'a str,
    /// The verb (`list` for list and watch).
    pub verb: Verb,
    /// Where the request acts.
    pub scope: Scope<'a>,
}

/// What an allowed request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything the request names.
    All,
    /// Only objects in these namespaces (a list or watch across all
    /// namespaces by a user allowed in some namespaces only).
    Namespaces(Arc<BTreeSet<String>>),
}

impl Access {
    /// True if an object in `namespace` may be shown.
    pub fn allows(&self, namespace: Option<&str>) -> bool {
        match self {
            Access::All => true,
            Access::Namespaces(allowed) => namespace.is_some_and(|ns| allowed.contains(ns)),
        }
    }
}

/// Decides whether a user may do something.
///
/// Implement it to plug an embedding service's own policy into the API
/// ([`ApiState::with_authorizer`](crate::ApiState::with_authorizer)).
pub trait Authorizer: Send + Sync + std::fmt::Debug + 'static {
    /// What the request may see; 401 or 403 (or 503 while the policy is not
    /// loaded) to refuse.
    fn authorize(&self, user: &User, request: &AccessRequest<'_>) -> Result<Access, ApiError>;

    /// The sorted names of the roles bound to `user`, if this authorizer
    /// knows them without asking the store (`GET /me`).
    fn roles_of(&self, _user: &User) -> Option<Vec<String>> {
        None
    }

    /// A number that changes whenever decisions may have changed (RBAC:
    /// the policy was rebuilt). Open watch streams check again when it
    /// moves, and end when the user may no longer watch.
    fn generation(&self) -> u64 {
        0
    }
}

/// Refuses everyone with 403 (Krake's `always-deny`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysDeny;

impl Authorizer for AlwaysDeny {
    fn authorize(&self, _user: &User, _request: &AccessRequest<'_>) -> Result<Access, ApiError> {
        Err(ApiError::http(StatusCode::FORBIDDEN))
    }
}

/// Allows everything to one user, the
/// [`InternalUser`](crate::authentication::InternalUser) of the process, and
/// asks `inner` about everyone else.
#[derive(Debug, Clone)]
pub struct AllowInternal {
    /// The internal user's name.
    pub user: Arc<str>,
    /// The authorizer of everyone else.
    pub inner: Arc<dyn Authorizer>,
}

impl Authorizer for AllowInternal {
    fn authorize(&self, user: &User, request: &AccessRequest<'_>) -> Result<Access, ApiError> {
        if user.name() == &*self.user {
            return Ok(Access::All);
        }
        self.inner.authorize(user, request)
    }

    fn roles_of(&self, user: &User) -> Option<Vec<String>> {
        self.inner.roles_of(user)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// Allows everything (Krake's `always-allow`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _user: &User, _request: &AccessRequest<'_>) -> Result<Access, ApiError> {
        Ok(Access::All)
    }
}

impl AuthorizationMode {
    /// Krake's spelling of the mode in `api.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationMode::AlwaysAllow => "always-allow",
            AuthorizationMode::AlwaysDeny => "always-deny",
            AuthorizationMode::Rbac => "RBAC",
        }
    }
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;

    /// Parses Krake's spellings: `always-allow`, `always-deny`, `RBAC`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always-allow" => Ok(AuthorizationMode::AlwaysAllow),
            "always-deny" => Ok(AuthorizationMode::AlwaysDeny),
            "RBAC" => Ok(AuthorizationMode::Rbac),
            other => Err(format!(
                "authorization: {other:?} (use always-allow, always-deny or RBAC)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_limits_namespaces() {
        let only = Access::Namespaces(Arc::new(BTreeSet::from(["a".to_owned()])));
        assert!(only.allows(Some("a")));
        assert!(!only.allows(Some("b")));
        assert!(!only.allows(None));
        assert!(Access::All.allows(Some("b")));
    }

    #[test]
    fn modes_parse_krakes_spellings() {
        for mode in [
            AuthorizationMode::AlwaysAllow,
            AuthorizationMode::AlwaysDeny,
            AuthorizationMode::Rbac,
        ] {
            assert_eq!(mode.as_str().parse::<AuthorizationMode>(), Ok(mode));
        }
        let err = "rbac".parse::<AuthorizationMode>().unwrap_err();
        assert!(err.contains("\"rbac\""), "{err}");
    }

    #[test]
    fn the_internal_user_is_allowed_and_others_asked() {
        let request = AccessRequest {
            api: "core",
            resource: "roles",
            verb: Verb::Delete,
            scope: Scope::Global,
        };
        let authorizer = AllowInternal {
            user: Arc::from("system:internal"),
            inner: Arc::new(AlwaysDeny),
        };
        assert_eq!(
            authorizer
                .authorize(&User::new("system:internal"), &request)
                .unwrap(),
            Access::All
        );
        let err = authorizer
            .authorize(&User::new("system:admin"), &request)
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn always_deny_is_403() {
        let request = AccessRequest {
            api: "kubernetes",
            resource: "applications",
            verb: Verb::Get,
            scope: Scope::Namespace("a"),
        };
        let err = AlwaysDeny.authorize(&User::new("x"), &request).unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            AlwaysAllow.authorize(&User::new("x"), &request).unwrap(),
            Access::All
        );
    }
}
