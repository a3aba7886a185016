//! The kinds a fake serves: the built-in ones and those that
//! CustomResourceDefinitions add. A kind is declared once here; storage,
//! routes and discovery flow from it.

use std::sync::Arc;

use serde_json::Value;

/// A custom resource version's `openAPIV3Schema`, read for its list types.
pub(crate) type ListRules = Option<Arc<Value>>;

/// One served resource: `deployments` in `apps/v1`.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// Served version, `v1`.
    pub version: String,
    /// `Deployment`.
    pub kind: String,
    /// `deployments`.
    pub plural: String,
    /// `deployment`.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource (status kept apart from the rest).
    pub status: bool,
    /// Short names for discovery (`deploy`).
    pub short_names: Vec<&'static str>,
    /// The storage key shared by every version of a kind: `apps/deployments`.
    pub key: Arc<str>,
    /// For custom resources: the version's `openAPIV3Schema` (list types).
    pub schema: ListRules,
}

impl ResourceType {
    /// `deployments.apps`, or `pods` for the core group: how messages name it.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apps/v1` or `v1`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
        short_names: &[&'static str],
    ) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            namespaced,
            status,
            short_names: short_names.to_vec(),
            key: storage_key(group, plural),
            schema: None,
        }
    }
}

/// The storage key of a resource: every version of it shares the objects.
pub(crate) fn storage_key(group: &str, plural: &str) -> Arc<str> {
    Arc::from(format!("{group}/{plural}"))
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (`""`, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Every served resource.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// The built-in kinds.
    pub(crate) fn builtin() -> Self {
        use ResourceType as R;
        let types = vec![
            R::builtin("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
            R::builtin("", "v1", "Node", "nodes", false, true, &["no"]),
            R::builtin("", "v1", "Pod", "pods", true, true, &["po"]),
            R::builtin("", "v1", "Service", "services", true, true, &["svc"]),
            R::builtin("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
            R::builtin("", "v1", "Secret", "secrets", true, false, &[]),
            R::builtin(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                true,
                false,
                &["sa"],
            ),
            R::builtin(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
                true,
                &["pvc"],
            ),
            R::builtin("", "v1", "Event", "events", true, false, &["ev"]),
            R::builtin(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                true,
                true,
                &["deploy"],
            ),
            R::builtin(
                "apps",
                "v1",
                "StatefulSet",
                "statefulsets",
                true,
                true,
                &["sts"],
            ),
            R::builtin(
                "apps",
                "v1",
                "ReplicaSet",
                "replicasets",
                true,
                true,
                &["rs"],
            ),
            R::builtin("apps", "v1", "DaemonSet", "daemonsets", true, true, &["ds"]),
            R::builtin("batch", "v1", "Job", "jobs", true, true, &[]),
            R::builtin("batch", "v1", "CronJob", "cronjobs", true, true, &["cj"]),
            R::builtin(
                "networking.k8s.io",
                "v1",
                "Ingress",
                "ingresses",
                true,
                true,
                &["ing"],
            ),
            R::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
                &["crd", "crds"],
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                true,
                false,
                &[],
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
                false,
                &[],
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
                false,
                &[],
            ),
            R::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                false,
                &[],
            ),
        ];
        Self {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every resource, in registration order.
    pub(crate) fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// The resource at `/apis/{group}/{version}/{plural}`.
    pub(crate) fn by_plural(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The resource of an object's `apiVersion` and `kind`.
    pub(crate) fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    /// Is this group/version served?
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// The groups in order of first registration (core excluded), each with
    /// its versions in order.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    /// Registers the versions of a CRD (replacing what it declared before).
    /// Returns the `acceptedNames` to report, or an error message.
    pub(crate) fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
        let names = &spec["names"];
        let kind = names["kind"]
            .as_str()
            .ok_or("spec.names.kind: Required value")?;
        let plural = names["plural"]
            .as_str()
            .ok_or("spec.names.plural: Required value")?;
        let singular = names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let versions = spec["versions"]
            .as_array()
            .ok_or("spec.versions: Required value")?;
        self.unregister(group, plural);
        for v in versions {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            let Some(version) = v["name"].as_str() else {
                continue;
            };
            let schema = v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new);
            self.types.push(Arc::new(ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: singular.clone(),
                namespaced,
                status: v.pointer("/subresources/status").is_some(),
                short_names: Vec::new(),
                key: storage_key(group, plural),
                schema,
            }));
        }
        Ok(())
    }

    /// Removes every version of `plural.group`.
    pub(crate) fn unregister(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
    }

    /// The storage key (`group/plural`) a CRD object serves.
    pub(crate) fn crd_key(crd: &Value) -> Option<(String, String)> {
        let group = crd.pointer("/spec/group")?.as_str()?;
        let plural = crd.pointer("/spec/names/plural")?.as_str()?;
        Some((group.to_string(), plural.to_string()))
    }
}
