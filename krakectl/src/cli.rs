//! The command tree, generated from the kind registry: every kind gets the
//! same verbs (`list`, `get`, create or `register`, `update`, `delete`,
//! `watch`, and the sub-operations it serves), with its own flags layered on
//! top from the kind catalog (`catalog.rs`).

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, ArgGroup, Command, value_parser};
use krake_data::registry::Subresource;

use crate::catalog::{self, Flags, GROUPS, KindCommand};
use crate::output::Format;

/// The shells of `--print-completion`: Krake's (bash, zsh, tcsh) and the
/// others clap_complete writes scripts for.
pub const COMPLETION_SHELLS: [&str; 6] = ["bash", "zsh", "tcsh", "fish", "elvish", "powershell"];

/// The whole `krakectl` command.
pub fn command() -> Command {
    let mut root = Command::new("krakectl")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The command line tool of Krake: applications, clusters, clouds, metrics and more")
        .arg_required_else_help(true)
        // As Krake's argparse: a repeated flag takes its last value.
        .args_override_self(true)
        // As argparse's allow_abbrev: a long flag by a prefix of it that no
        // other flag of the command starts with.
        .infer_long_args(true)
        .arg(
            Arg::new("config")
                .long("config")
                .global(true)
                .value_name("PATH")
                .value_parser(value_parser!(std::path::PathBuf))
                .help("Configuration file (default: ./krakectl.yaml, $XDG_CONFIG_HOME/krakectl.yaml, /etc/krakectl/krakectl.yaml)"),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .global(true)
                .value_name("FORMAT")
                .value_parser(value_parser!(Format))
                .default_value("table")
                .help("Output format"),
        )
        .arg(
            Arg::new("print-completion")
                .long("print-completion")
                .value_name("SHELL")
                .value_parser(PossibleValuesParser::new(COMPLETION_SHELLS))
                .exclusive(true)
                .help("Print a shell completion script and exit"),
        );
    for group in GROUPS {
        let mut command = Command::new(group.name)
            .visible_aliases(group.aliases.iter().copied())
            .about(group.about)
            .subcommand_required(true)
            .arg_required_else_help(true);
        for kind in catalog::kinds_of(group) {
            command = command.subcommand(kind_command(&kind));
        }
        root = root.subcommand(command);
    }
    root.subcommand(
        Command::new("completion")
            .about("Print a shell completion script")
            .arg(
                Arg::new("shell")
                    .required(true)
                    .value_parser(value_parser!(clap_complete::Shell)),
            ),
    )
}

/// A tcsh completion script for `command` (clap_complete has none; Krake's
/// `--print-completion tcsh` does): the command names and aliases at each
/// level, and every long flag.
pub fn tcsh_completion(command: &Command) -> String {
    fn names(command: &Command) -> Vec<String> {
        std::iter::once(command.get_name())
            .chain(command.get_all_aliases())
            .map(str::to_owned)
            .collect()
    }
    fn children(command: &Command) -> Vec<String> {
        let mut all: Vec<String> = command.get_subcommands().flat_map(names).collect();
        all.sort();
        all.dedup();
        all
    }
    // The words that may follow each command word (a word used at several
    // places, like `cluster`, offers the union).
    let mut next: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut flags: Vec<String> = Vec::new();
    let mut stack: Vec<&Command> = vec![command];
    while let Some(current) = stack.pop() {
        for arg in current.get_arguments() {
            flags.extend(
                arg.get_long_and_visible_aliases()
                    .into_iter()
                    .flatten()
                    .map(|l| format!("--{l}")),
            );
        }
        for sub in current.get_subcommands() {
            let words = children(sub);
            if !words.is_empty() {
                for name in names(sub) {
                    let entry = next.entry(name).or_default();
                    entry.extend(words.iter().cloned());
                    entry.sort();
                    entry.dedup();
                }
            }
            stack.push(sub);
        }
    }
    flags.sort();
    flags.dedup();
    let mut script = format!("complete krakectl 'p/1/({})/'", children(command).join(" "));
    for (word, words) in &next {
        script.push_str(&format!(" \\\n    'n/{word}/({})/'", words.join(" ")));
    }
    script.push_str(&format!(
        " \\\n    'c/--/({})/'\n",
        flags.iter().map(|f| &f[2..]).collect::<Vec<_>>().join(" ")
    ));
    script
}

fn name_arg() -> Arg {
    Arg::new("name")
        .required(true)
        .value_name("NAME")
        .help("The object's name")
}

fn namespace_arg() -> Arg {
    Arg::new("namespace")
        .short('n')
        .long("namespace")
        .value_name("NAMESPACE")
        .help("Namespace (default: the configured user)")
}

fn collection_args(kind: &KindCommand) -> Vec<Arg> {
    let mut args = Vec::new();
    if kind.info.is_namespaced() {
        args.push(namespace_arg());
        args.push(
            Arg::new("all")
                .short('a')
                .long("all")
                .visible_short_alias('A')
                .visible_alias("all-namespaces")
                .action(ArgAction::SetTrue)
                .help("Across all namespaces (overrides -n, as Krake's)"),
        );
    }
    args.push(
        Arg::new("selector")
            .short('l')
            .long("selector")
            .value_name("SELECTOR")
            .help("Label selector, e.g. 'env=prod,tier in (web, db)'"),
    );
    args
}

fn object_args(kind: &KindCommand) -> Vec<Arg> {
    let mut args = vec![name_arg()];
    if kind.info.is_namespaced() {
        args.push(namespace_arg());
    }
    args
}

fn repeated(
    id: &'static str,
    short: Option<char>,
    long: &'static str,
    value: &'static str,
    help: &'static str,
) -> Arg {
    let arg = Arg::new(id)
        .long(long)
        .value_name(value)
        .action(ArgAction::Append)
        .help(help);
    match short {
        Some(c) => arg.short(c),
        None => arg,
    }
}

fn single(id: &'static str, long: &'static str, value: &'static str, help: &'static str) -> Arg {
    Arg::new(id).long(long).value_name(value).help(help)
}

fn switch(id: &'static str, long: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .long(long)
        .action(ArgAction::SetTrue)
        .help(help)
}

fn pair(id: &'static str, long: &'static str, names: [&'static str; 2], help: &'static str) -> Arg {
    Arg::new(id)
        .long(long)
        .num_args(2)
        .value_names(names)
        .action(ArgAction::Append)
        .help(help)
}

fn labels_arg() -> Arg {
    repeated(
        "label",
        Some('l'),
        "label",
        "KEY=VALUE",
        "Label of the object (repeatable)",
    )
}

fn backoff_args() -> Vec<Arg> {
    vec![
        single("backoff", "backoff", "N", "Multiplier of the retry delay")
            .value_parser(value_parser!(i64)),
        single(
            "backoff_delay",
            "backoff_delay",
            "SECONDS",
            "Delay before a retry",
        )
        .visible_alias("backoff-delay")
        .value_parser(value_parser!(i64)),
        single(
            "backoff_limit",
            "backoff_limit",
            "N",
            "Retries before FAILED (-1: forever)",
        )
        .visible_alias("backoff-limit")
        .allow_negative_numbers(true)
        .value_parser(value_parser!(i64)),
    ]
}

fn metric_ref_args() -> Vec<Arg> {
    vec![
        pair(
            "metric",
            "metric",
            ["NAME", "WEIGHT"],
            "Namespaced metric and its weight (repeatable)",
        ),
        pair(
            "global-metric",
            "global-metric",
            ["NAME", "WEIGHT"],
            "Global metric and its weight (repeatable)",
        ),
    ]
}

fn wait_arg(states: &'static [&'static str], default: &'static str) -> Arg {
    Arg::new("wait")
        .long("wait")
        .value_name("STATE")
        .num_args(0..=1)
        .default_missing_value(default)
        .value_parser(PossibleValuesParser::new(states.iter().copied()))
        .help("Wait until the object reaches this state, showing its state meanwhile")
}

fn remove_existing(id: &'static str, what: &'static str) -> Arg {
    switch(id, id, what)
}

/// The per-kind flags of create/register (`update == false`) and update.
fn kind_flags(flags: Flags, update: bool) -> Vec<Arg> {
    let mut args = Vec::new();
    match flags {
        Flags::Application => {
            args.push(
                Arg::new("file")
                    .short('f')
                    .long("file")
                    .value_name("FILE")
                    .help("Kubernetes manifest (multi-document YAML) or TOSCA template"),
            );
            args.push(
                single(
                    "url",
                    "url",
                    "URL",
                    "URL of a TOSCA template (.yaml/.yml) or CSAR (.zip/.csar)",
                )
                .short('u'),
            );
            args.push(
                single(
                    "observer_schema",
                    "observer_schema",
                    "FILE",
                    "Observer schema file",
                )
                .short('O')
                .visible_alias("observer_schema_file")
                .visible_alias("observer-schema"),
            );
            args.push(
                switch("enable-migration", "enable-migration", "Allow migration")
                    .conflicts_with("disable-migration"),
            );
            args.push(switch(
                "disable-migration",
                "disable-migration",
                "Forbid migration",
            ));
            // Krake's states: creating|pending|running on create,
            // reconciling|running on update.
            args.push(if update {
                wait_arg(
                    &["reconciling", "running", "creating", "pending"],
                    "running",
                )
            } else {
                wait_arg(&["creating", "pending", "running"], "running")
            });
            args.push(repeated(
                "cluster-label-constraint",
                Some('L'),
                "cluster-label-constraint",
                "EXPR",
                "Label constraint on the cluster",
            ));
            args.push(repeated(
                "cluster-resource-constraint",
                Some('R'),
                "cluster-resource-constraint",
                "CRD",
                "Custom resource the cluster must support",
            ));
            args.push(repeated(
                "cluster-metric-constraint",
                Some('M'),
                "cluster-metric-constraint",
                "EXPR",
                "Metric constraint on the cluster",
            ));
            args.push(labels_arg());
            args.push(switch(
                "hook-complete",
                "hook-complete",
                "Enable the complete hook",
            ));
            args.push(
                Arg::new("hook-shutdown")
                    .long("hook-shutdown")
                    .num_args(0..=3)
                    .value_names(["TIMEOUT", "STRATEGY", "RETRIES"])
                    .help("Enable the shutdown hook [timeout [give_up|delete [retries]]]"),
            );
            args.extend(backoff_args());
            args.push(switch(
                "auto-cluster-create",
                "auto-cluster-create",
                "Let the scheduler create a cluster",
            ));
            args.push(repeated(
                "inject",
                Some('i'),
                "inject",
                "KEY=VALUE",
                "Replace environment values equal to KEY with VALUE",
            ));
            if update {
                args.push(remove_existing(
                    "remove-existing-labels",
                    "Replace the labels instead of adding",
                ));
                args.push(remove_existing(
                    "remove-existing-label-constraints",
                    "Replace the label constraints",
                ));
                args.push(remove_existing(
                    "remove-existing-resource-constraints",
                    "Replace the resource constraints",
                ));
                args.push(remove_existing(
                    "remove-existing-metric-constraints",
                    "Replace the metric constraints",
                ));
            }
        }
        Flags::Cluster => {
            args.push(
                single(
                    "kubeconfig",
                    "kubeconfig",
                    "FILE",
                    "Kubeconfig of the cluster",
                )
                .short('k'),
            );
            args.push(
                single(
                    "context",
                    "context",
                    "CONTEXT",
                    "Context of the kubeconfig (default: its current-context)",
                )
                .short('c'),
            );
            args.push(single("file", "file", "FILE", "TOSCA template of the cluster").short('f'));
            args.push(repeated(
                "custom-resource",
                Some('R'),
                "custom-resource",
                "CRD",
                "Custom resource the cluster supports",
            ));
            args.extend(metric_ref_args());
            args.push(labels_arg());
            args.push(switch(
                "inherit-labels",
                "inherit-labels",
                "Inherit the labels of the cloud",
            ));
            args.push(switch(
                "inherit-metrics",
                "inherit-metrics",
                "Inherit the metrics of the cloud",
            ));
            args.push(repeated(
                "cloud-label-constraint",
                Some('L'),
                "cloud-label-constraint",
                "EXPR",
                "Label constraint on the cloud",
            ));
            args.push(repeated(
                "cloud-metric-constraint",
                Some('M'),
                "cloud-metric-constraint",
                "EXPR",
                "Metric constraint on the cloud",
            ));
            args.extend(backoff_args());
            if update {
                args.push(remove_existing(
                    "remove-existing-labels",
                    "Replace the labels instead of adding",
                ));
                args.push(remove_existing(
                    "remove-existing-metrics",
                    "Replace the metrics",
                ));
                args.push(remove_existing(
                    "remove-existing-cloud-label-constraints",
                    "Replace the cloud label constraints",
                ));
                args.push(remove_existing(
                    "remove-existing-cloud-metric-constraints",
                    "Replace the cloud metric constraints",
                ));
            }
        }
        Flags::InfrastructureProvider => {
            // Only on register, as Krake's (where `--t` abbreviates `--token`
            // on update).
            if !update {
                args.push(
                    single("type", "type", "TYPE", "Provider type")
                        .value_parser(["im"])
                        .default_value("im"),
                );
            }
            args.push(single("url", "url", "URL", "URL of the provider").required(!update));
            args.push(single("username", "username", "USERNAME", "User name"));
            args.push(single("password", "password", "PASSWORD", "Password"));
            args.push(single("token", "token", "TOKEN", "Token"));
            args.push(labels_arg());
        }
        Flags::Cloud => {
            args.push(single("type", "type", "TYPE", "Cloud type").value_parser(["openstack"]));
            args.push(single("url", "url", "URL", "Keystone URL").required(!update));
            args.push(
                single("username", "username", "USERNAME", "OpenStack user name").required(!update),
            );
            args.push(single(
                "password",
                "password",
                "PASSWORD",
                "OpenStack password (asked for when missing)",
            ));
            args.push(
                single("project", "project", "PROJECT", "OpenStack project name").required(!update),
            );
            args.push(single(
                "domain-name",
                "domain-name",
                "NAME",
                "User domain name (default: Default)",
            ));
            args.push(single(
                "domain-id",
                "domain-id",
                "ID",
                "Project domain id (default: default)",
            ));
            args.push(single(
                "infra-provider",
                "infra-provider",
                "NAME",
                "Namespaced infrastructure provider",
            ));
            args.push(
                single(
                    "global-infra-provider",
                    "global-infra-provider",
                    "NAME",
                    "Global infrastructure provider",
                )
                .conflicts_with("infra-provider"),
            );
            args.extend(metric_ref_args());
            args.push(labels_arg());
            if update {
                args.push(remove_existing(
                    "remove-existing-labels",
                    "Replace the labels instead of adding",
                ));
                args.push(remove_existing(
                    "remove-existing-metrics",
                    "Replace the metrics",
                ));
            }
        }
        Flags::MetricsProvider => {
            args.push(
                single("type", "type", "TYPE", "Provider type")
                    .value_parser(["prometheus", "static", "kafka", "influx"])
                    .required(!update),
            );
            args.push(single(
                "url",
                "url",
                "URL",
                "URL (prometheus, kafka, influx)",
            ));
            args.push(
                pair(
                    "metric",
                    "metric",
                    ["NAME", "VALUE"],
                    "Metric of a static provider (repeatable)",
                )
                .short('m'),
            );
            args.push(single("table", "table", "TABLE", "KSQL table (kafka)"));
            args.push(single(
                "comparison-column",
                "comparison-column",
                "COLUMN",
                "Column holding the metric name (kafka)",
            ));
            args.push(single(
                "value-column",
                "value-column",
                "COLUMN",
                "Column holding the value (kafka)",
            ));
            args.push(single("token", "token", "TOKEN", "Token (influx)"));
            args.push(single("org", "org", "ORG", "Organization (influx)"));
            args.push(single("bucket", "bucket", "BUCKET", "Bucket (influx)"));
            args.push(labels_arg());
        }
        Flags::Metric | Flags::GlobalMetric => {
            // Krake's spelling: `--mp-name` for `metric`, `--gmp-name` for
            // `globalmetric` (where `--mp-name` stays as an alias). The id is
            // `mp-name` for both.
            let provider = if flags == Flags::GlobalMetric {
                single("mp-name", "gmp-name", "PROVIDER", "Global metrics provider")
                    .visible_alias("mp-name")
            } else {
                single("mp-name", "mp-name", "PROVIDER", "Metrics provider")
            };
            args.push(provider.required(!update));
            args.push(single(
                "metric-name",
                "metric-name",
                "NAME",
                "Metric name at the provider (default: NAME)",
            ));
            args.push(
                single("min", "min", "MIN", "Lowest value")
                    .allow_negative_numbers(true)
                    .value_parser(value_parser!(f64))
                    .required(!update),
            );
            args.push(
                single("max", "max", "MAX", "Highest value")
                    .allow_negative_numbers(true)
                    .value_parser(value_parser!(f64))
                    .required(!update),
            );
            args.push(
                Arg::new("allowed-values")
                    .long("allowed-values")
                    // Krake's nargs='*': no value changes nothing.
                    .num_args(0..)
                    .value_name("VALUE")
                    .value_parser(value_parser!(i64))
                    .help("Allowed values"),
            );
            args.push(labels_arg());
        }
        Flags::Lease => {
            args.push(single("file", "file", "FILE", "Lease manifest (YAML or JSON)").short('f'));
            args.push(labels_arg());
        }
        Flags::Role => {
            args.push(single("file", "file", "FILE", "Role manifest (YAML or JSON)").short('f'));
            args.push(repeated(
                "rule",
                None,
                "rule",
                "API:RESOURCES:NAMESPACES:VERBS",
                "A rule, lists comma-separated, e.g. kubernetes:applications:testing:get,list",
            ));
            args.push(labels_arg());
        }
        Flags::RoleBinding => {
            args.push(
                single(
                    "file",
                    "file",
                    "FILE",
                    "RoleBinding manifest (YAML or JSON)",
                )
                .short('f'),
            );
            args.push(repeated(
                "user",
                None,
                "user",
                "USER",
                "User bound (repeatable)",
            ));
            args.push(repeated(
                "role",
                None,
                "role",
                "ROLE",
                "Role bound (repeatable)",
            ));
            args.push(labels_arg());
        }
        Flags::Project => {
            args.push(single(
                "auth-url",
                "auth-url",
                "URL",
                "Keystone URL (default: $OS_AUTH_URL)",
            ));
            args.push(
                single("template", "template", "ID", "Magnum cluster template").required(!update),
            );
            args.push(single(
                "user-id",
                "user-id",
                "ID",
                "User id (password authentication; default: $OS_USER_ID)",
            ));
            args.push(single(
                "password",
                "password",
                "PASSWORD",
                "Password (password authentication; default: $OS_PASSWORD)",
            ));
            args.push(single(
                "project-id",
                "project-id",
                "ID",
                "Project id (password authentication; default: $OS_PROJECT_ID)",
            ));
            args.push(
                Arg::new("application-credential")
                    .long("application-credential")
                    .num_args(2)
                    .value_names(["ID", "SECRET"])
                    .conflicts_with_all(["user-id", "password", "project-id"])
                    .help("Application credential"),
            );
            args.extend(metric_ref_args());
            args.push(labels_arg());
        }
        Flags::MagnumCluster => {
            args.push(
                single("node-count", "node-count", "N", "Worker nodes")
                    .value_parser(value_parser!(i64)),
            );
            args.push(repeated(
                "project-label-constraint",
                Some('L'),
                "project-label-constraint",
                "EXPR",
                "Label constraint on the project",
            ));
            args.extend(metric_ref_args());
            if !update {
                args.push(
                    single("master-count", "master-count", "N", "Master nodes")
                        .value_parser(value_parser!(i64)),
                );
                args.push(labels_arg());
            }
        }
    }
    args
}

fn kind_command(kind: &KindCommand) -> Command {
    let info = kind.info;
    let mut command = Command::new(kind.name)
        .visible_aliases(kind.aliases.iter().copied())
        .about(format!("{} objects", info.kind))
        .subcommand_required(true)
        .arg_required_else_help(true);
    command = command.subcommand(
        Command::new("list")
            .about(format!("List {}s", info.kind))
            .args(collection_args(kind)),
    );
    command = command.subcommand(
        Command::new("get")
            .about(format!("Show one {}", info.kind))
            .args(object_args(kind)),
    );
    // Create (or register): a cluster registers from a kubeconfig (its name
    // comes from there) and is created from a TOSCA template.
    if kind.flags == Flags::Cluster {
        let mut register = Command::new("register")
            .about("Register a cluster from its kubeconfig")
            .args(kind_flags(kind.flags, false))
            .mut_arg("kubeconfig", |a| a.required(true));
        if info.is_namespaced() {
            register = register.arg(namespace_arg());
        }
        command = command.subcommand(register);
        // Without the kubeconfig flags, as Krake's (where `--co`
        // abbreviates `--config`).
        let tosca_flags = kind_flags(kind.flags, false)
            .into_iter()
            .filter(|arg| !matches!(arg.get_id().as_str(), "kubeconfig" | "context"));
        command = command.subcommand(
            Command::new("create")
                .about("Create a cluster from a TOSCA template")
                .args(object_args(kind))
                .args(tosca_flags)
                .mut_arg("file", |a| a.required(true)),
        );
    } else {
        let mut create = Command::new(kind.create_verb)
            .about(format!("Create a new {}", info.kind))
            .args(object_args(kind))
            .args(kind_flags(kind.flags, false));
        if kind.create_verb != "create" {
            create = create.visible_alias("create");
        }
        if kind.flags == Flags::Application {
            create = create.group(ArgGroup::new("source").args(["file", "url"]).required(true));
        }
        command = command.subcommand(create);
    }
    command = command.subcommand(
        Command::new("update")
            .about(format!("Change an existing {}", info.kind))
            .args(object_args(kind))
            .args(kind_flags(kind.flags, true)),
    );
    let forceable = info.api == "kubernetes";
    let mut delete = Command::new("delete")
        .about(format!("Delete one {}", info.kind))
        .args(object_args(kind));
    if forceable {
        delete = delete
            .arg(switch(
                "force",
                "force",
                "Remove at once, without waiting for finalizers",
            ))
            .arg(wait_arg(&["deleting", "deleted"], "deleted"));
    }
    command = command.subcommand(delete);
    if info.subresource(Subresource::Retry).is_some() {
        command = command.subcommand(
            Command::new("retry")
                .about("Retry a failed migration or deletion")
                .args(object_args(kind)),
        );
    }
    command.subcommand(
        Command::new("watch")
            .about(format!("Print changes of {}s as they happen", info.kind))
            .args(collection_args(kind))
            .arg(
                Arg::new("max-events")
                    .long("max-events")
                    .value_name("N")
                    .value_parser(value_parser!(u64))
                    .help("Stop after N events"),
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn krake_aliases_parse() {
        for args in [
            vec!["krakectl", "kubernetes", "application", "list", "-a"],
            vec!["krakectl", "kube", "app", "list", "-A"],
            vec!["krakectl", "infra", "gip", "list"],
            vec!["krakectl", "infra", "gc", "list"],
            vec!["krakectl", "core", "gmp", "list"],
            vec!["krakectl", "core", "gm", "list"],
            vec!["krakectl", "openstack", "cluster", "list", "-n", "x"],
            vec!["krakectl", "core", "role", "list", "-o", "json"],
            vec![
                "krakectl", "kube", "cluster", "register", "-k", "kc.yaml", "--metric", "m", "1",
            ],
            vec!["krakectl", "kube", "app", "delete", "x", "--wait"],
        ] {
            command()
                .try_get_matches_from(&args)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(
            command()
                .try_get_matches_from(["krakectl", "kube", "app", "create", "x"])
                .is_err()
        );
    }
}
