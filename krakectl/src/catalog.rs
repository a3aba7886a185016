//! How each kind of the registry appears on the command line: its group,
//! its command name and aliases (Krake's), and which per-kind flags its
//! create and update commands take. Everything else about a kind's commands
//! is generic and comes from the registry.

use krake_data::KindInfo;
use krake_data::registry;

/// A top-level command group, one per API group.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The API group.
    pub api: &'static str,
    /// The command name.
    pub name: &'static str,
    /// Krake's aliases.
    pub aliases: &'static [&'static str],
    /// One line of help.
    pub about: &'static str,
}

/// The groups, in Krake's order of its help.
pub const GROUPS: &[Group] = &[
    Group {
        api: "kubernetes",
        name: "kube",
        aliases: &["kubernetes"],
        about: "Kubernetes applications and clusters",
    },
    Group {
        api: "infrastructure",
        name: "infra",
        aliases: &["infrastructure"],
        about: "Infrastructure providers and clouds",
    },
    Group {
        api: "core",
        name: "core",
        aliases: &[],
        about: "Metrics, metrics providers, roles and role bindings",
    },
    Group {
        api: "openstack",
        name: "os",
        aliases: &["openstack"],
        about: "OpenStack projects and Magnum clusters (deprecated)",
    },
];

/// The per-kind flags of create/register and update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flags {
    /// `kube app`.
    Application,
    /// `kube cluster`.
    Cluster,
    /// `infra gip|ip`.
    InfrastructureProvider,
    /// `infra gcloud|cloud`.
    Cloud,
    /// `core gmp|mp`.
    MetricsProvider,
    /// `core metric` (provider flag `--mp-name`).
    Metric,
    /// `core globalmetric|gm` (provider flag `--gmp-name`, Krake's spelling;
    /// `--mp-name` kept as an alias).
    GlobalMetric,
    /// `core role`.
    Role,
    /// `core rolebinding`.
    RoleBinding,
    /// `core lease` (beyond Krake: leader-election leases).
    Lease,
    /// `os project`.
    Project,
    /// `os cluster`.
    MagnumCluster,
}

/// One kind's commands.
#[derive(Debug, Clone, Copy)]
pub struct KindCommand {
    /// The registry entry.
    pub info: &'static KindInfo,
    /// The command name under its group.
    pub name: &'static str,
    /// Krake's aliases.
    pub aliases: &'static [&'static str],
    /// `create` or `register` (Krake's name for providers, clouds and clusters).
    pub create_verb: &'static str,
    /// The per-kind flags.
    pub flags: Flags,
}

/// The command of `info`.
pub fn command_of(info: &'static KindInfo) -> KindCommand {
    let (name, aliases, create_verb, flags): (_, &'static [&'static str], _, _) = match info.kind {
        "Application" => ("app", &["application"], "create", Flags::Application),
        "Cluster" => ("cluster", &[], "register", Flags::Cluster),
        "GlobalInfrastructureProvider" => (
            "globalinfrastructureprovider",
            &["gprovider", "gip"],
            "register",
            Flags::InfrastructureProvider,
        ),
        "InfrastructureProvider" => (
            "infrastructureprovider",
            &["provider", "ip"],
            "register",
            Flags::InfrastructureProvider,
        ),
        "GlobalCloud" => ("globalcloud", &["gcloud", "gc"], "register", Flags::Cloud),
        "Cloud" => ("cloud", &[], "register", Flags::Cloud),
        "MetricsProvider" => ("metricsprovider", &["mp"], "create", Flags::MetricsProvider),
        "GlobalMetricsProvider" => (
            "globalmetricsprovider",
            &["gmp"],
            "create",
            Flags::MetricsProvider,
        ),
        "Metric" => ("metric", &[], "create", Flags::Metric),
        "GlobalMetric" => ("globalmetric", &["gm"], "create", Flags::GlobalMetric),
        "Role" => ("role", &[], "create", Flags::Role),
        "RoleBinding" => ("rolebinding", &["rb"], "create", Flags::RoleBinding),
        "Lease" => ("lease", &[], "create", Flags::Lease),
        "Project" => ("project", &[], "create", Flags::Project),
        "MagnumCluster" => (
            "cluster",
            &["magnumcluster"],
            "create",
            Flags::MagnumCluster,
        ),
        _ => ("", &[], "create", Flags::Role),
    };
    KindCommand {
        info,
        name,
        aliases,
        create_verb,
        flags,
    }
}

/// Every kind's command under `group`, in registry order (Krake's).
pub fn kinds_of(group: &Group) -> Vec<KindCommand> {
    registry::ALL
        .iter()
        .filter(|info| info.api == group.api)
        .map(|info| command_of(info))
        .filter(|command| !command.name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_the_registry_has_a_command() {
        let mut count = 0;
        for group in GROUPS {
            let kinds = kinds_of(group);
            let mut names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                kinds.len(),
                "duplicate names in {}",
                group.name
            );
            count += kinds.len();
        }
        assert_eq!(count, registry::ALL.len());
    }
}
