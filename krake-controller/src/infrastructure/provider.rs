//! The seam between the infrastructure controller and the services that
//! create clusters: an [`InfrastructureProvider`] creates, updates,
//! reconfigures, observes and deletes one infrastructure (a cluster's
//! machines), a [`ProviderFactory`] builds one from Krake's provider and
//! cloud objects. The IM ([`super::im`]) is the only provider today; another
//! one (Yaook, Cluster API) is another factory, the controller stays as it
//! is.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use krake_data::kinds::infrastructure::{CloudSpec, InfrastructureProviderSpec};

/// What the provider says of an infrastructure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfrastructureState {
    /// Accepted, nothing started yet (IM `pending`).
    Pending,
    /// Machines being created or configured (IM `running`).
    Creating,
    /// Ready: its outputs can be read (IM `configured`).
    Configured,
    /// The machines run but their configuration failed (IM `unconfigured`,
    /// or any machine unconfigured): a reconfiguration may help.
    Unconfigured,
    /// Being deleted (IM `deleting`).
    Deleting,
    /// Failed for good (IM `failed`, `unknown`, `stopped`, `off`); the
    /// provider's word for it.
    Failed(String),
}

/// Why a provider call failed; [`ProviderError::is_transient`] tells the
/// failures worth trying again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The infrastructure does not exist (IM's 404).
    #[error("the infrastructure does not exist")]
    NotFound,
    /// The provider could not be reached or failed on its side (connection
    /// refused, timeout, 5xx): tried again with backoff.
    #[error("the infrastructure provider is unavailable: {0}")]
    Unavailable(String),
    /// The cloud or the provider object a cluster needs does not exist
    /// (yet): tried again with backoff.
    #[error("{0}")]
    Missing(String),
    /// The provider refused the request (a 4xx other than 404), with its
    /// message: the template or the credentials are wrong.
    #[error("the infrastructure provider refused the request: {0}")]
    Refused(String),
    /// The provider answered something unusable (no id, a state or outputs
    /// that do not parse).
    #[error("unexpected answer of the infrastructure provider: {0}")]
    InvalidAnswer(String),
    /// The cloud or provider objects cannot be used with this provider.
    #[error("{0}")]
    Unsupported(String),
}

impl ProviderError {
    /// Whether trying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable(_) | ProviderError::Missing(_)
        )
    }
}

/// One provider endpoint with the credentials of one cloud: everything the
/// controller asks of the outside world.
///
/// Every call is one request (or one short exchange): none waits for the
/// infrastructure to change; the controller polls [`state`](Self::state)
/// on its timers.
pub trait InfrastructureProvider: Send + Sync + fmt::Debug {
    /// Starts creating an infrastructure from `template` (TOSCA, YAML);
    /// its id.
    fn create<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// Starts changing infrastructure `id` to `template` (scaling up or
    /// down).
    fn update<'a>(
        &'a self,
        id: &'a str,
        template: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Starts configuring infrastructure `id` again.
    fn reconfigure<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Starts deleting infrastructure `id` ([`ProviderError::NotFound`] if
    /// it is gone already).
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The state of infrastructure `id`.
    fn state<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<InfrastructureState, ProviderError>>;

    /// The kubeconfig of the configured infrastructure `id`, as the
    /// provider returns it (YAML text).
    fn kubeconfig<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, ProviderError>>;
}

/// What a provider is built from: the provider object and the cloud the
/// cluster is bound to.
#[derive(Clone, Copy)]
pub struct ProviderTarget<'a> {
    /// The provider object's name.
    pub provider_name: &'a str,
    /// The provider object's spec (endpoint and credentials).
    pub provider: &'a InfrastructureProviderSpec,
    /// The cloud object's name.
    pub cloud_name: &'a str,
    /// The cloud object's spec (endpoint and credentials).
    pub cloud: &'a CloudSpec,
}

impl fmt::Debug for ProviderTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The specs hold passwords and tokens: names only.
        f.debug_struct("ProviderTarget")
            .field("provider_name", &self.provider_name)
            .field("cloud_name", &self.cloud_name)
            .finish_non_exhaustive()
    }
}

/// Builds the provider of a (provider object, cloud) pair.
pub trait ProviderFactory: Send + Sync + fmt::Debug {
    /// The provider for `target`.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Unsupported`] when this factory cannot serve the
    /// pair (another kind of provider or cloud).
    fn provider(
        &self,
        target: ProviderTarget<'_>,
    ) -> Result<Arc<dyn InfrastructureProvider>, ProviderError>;
}
