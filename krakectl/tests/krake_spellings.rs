//! Every command, alias and flag of Krake's own krakectl goes through our
//! parser (`krakectl::cli::command()`), so that users' scripts keep working.
//!
//! The spellings are data, written by hand from:
//! * Krake's argparse definitions, the `rok` package of the `krakectl`
//!   sdist on PyPI (`krakectl-0.0.0.tar.gz`, Krake's krakectl before its
//!   rename; Krake 1.0.1's own wheel carries no CLI): `rok/parser.py`
//!   (`-o/--output` l.236, `-l/--label` l.243, `-n/--namespace` l.251,
//!   `--backoff`/`--backoff_delay`/`--backoff_limit` l.255-276, `--metric`
//!   and `--global-metric NAME WEIGHT` l.279-352), `rok/kubernetes.py`
//!   (groups l.50-56, `app` l.291-718 incl. `ShutdownAction` l.99 and
//!   `-O/--observer_schema_file` l.353 and l.515,
//!   `cluster` l.720-1180), `rok/infrastructure.py` (groups l.30-47, commands
//!   l.60-1067), `rok/core.py` (groups l.26-37, providers l.525-960, metrics
//!   l.1092-1357, `--gmp-name` of `globalmetric` l.1248 and l.1315),
//!   `rok/openstack.py`
//!   (l.21-423);
//! * the same definitions in Krake's repository (rak-n-rok/Krake,
//!   `krakectl/krakectl/parser.py`, `kubernetes.py`, `core.py`), which add
//!   `arg_config`: `--config PATH` on every command;
//! * section 5.2 of the project's Krake API reference (Krake 1.0.1's krakectl: adds
//!   `-i/--inject` and `--print-completion {bash,zsh,tcsh}`);
//! * the transcripts of the real krakectl in krake-testkit/wire/krakectl/ (every
//!   command line that Krake accepted is replayed verbatim below).
//!
//! Each long flag is also tried as `--flag=value` and abbreviated to its
//! shortest prefix that no other long flag of Krake's command starts with
//! (argparse's `allow_abbrev`), and `-h`/`--help` at every level.
//!
//! Each argv puts the flag after the required positional and flags, as
//! Krake's argparse needs for its variadic flags (`--wait`,
//! `--hook-shutdown`, `--allowed-values`). A refused spelling is collected and
//! the test fails once with the whole list.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::error::ErrorKind;

/// A flag: its spellings (each is tried) and the value lists it is tried
/// with (`&[]` = a switch).
struct Flag {
    names: &'static [&'static str],
    values: &'static [&'static [&'static str]],
    /// Required arguments to use instead of the verb's (when the flag
    /// replaces one of them, e.g. `-u` instead of `-f`).
    base: Option<&'static [&'static str]>,
}

const fn flag(names: &'static [&'static str], values: &'static [&'static [&'static str]]) -> Flag {
    Flag {
        names,
        values,
        base: None,
    }
}

const SWITCH: &[&[&str]] = &[&[]];
const ONE: &[&[&str]] = &[&["x"]];

/// A verb of a kind: the required arguments that make a valid call, and its
/// flags.
struct Verb {
    name: &'static str,
    base: &'static [&'static str],
    flags: &'static [Flag],
}

/// A kind: every spelling of its group, every spelling of the kind, verbs.
struct Kind {
    groups: &'static [&'static str],
    names: &'static [&'static str],
    verbs: &'static [Verb],
}

const KUBE: &[&str] = &["kube", "kubernetes"];
const INFRA: &[&str] = &["infra", "infrastructure"];
const CORE: &[&str] = &["core"];
const OS: &[&str] = &["os", "openstack"];

const OUTPUT: Flag = flag(&["-o", "--output"], &[&["table"], &["json"], &["yaml"]]);
const NAMESPACE: Flag = flag(&["-n", "--namespace"], &[&["testing"]]);
const ALL: Flag = flag(&["-a", "--all"], SWITCH);
const LABEL: Flag = flag(&["-l", "--label"], &[&["env=prod"]]);
/// `arg_config` of Krake's krakectl (`krakectl/krakectl/parser.py` of
/// rak-n-rok/Krake): `--config PATH` on every command.
const CONFIG: Flag = flag(&["--config"], &[&["krakectl.yaml"]]);
const FORCE: Flag = flag(&["--force"], SWITCH);
const BACKOFF: Flag = flag(&["--backoff"], &[&["2"]]);
const BACKOFF_DELAY: Flag = flag(&["--backoff_delay"], &[&["5"]]);
const BACKOFF_LIMIT: Flag = flag(&["--backoff_limit"], &[&["3"], &["-1"]]);
const METRIC: Flag = flag(&["--metric"], &[&["heat", "1.5"]]);
const GLOBAL_METRIC: Flag = flag(&["--global-metric"], &[&["heat", "2"]]);

/// The common read verbs of a namespaced kind.
const fn list_namespaced() -> Verb {
    Verb {
        name: "list",
        base: &[],
        flags: &[OUTPUT, NAMESPACE, ALL],
    }
}

const fn list_global() -> Verb {
    Verb {
        name: "list",
        base: &[],
        flags: &[OUTPUT],
    }
}

const fn named_namespaced(name: &'static str) -> Verb {
    Verb {
        name,
        base: &["obj"],
        flags: &[OUTPUT, NAMESPACE],
    }
}

const fn named_global(name: &'static str) -> Verb {
    Verb {
        name,
        base: &["obj"],
        flags: &[OUTPUT],
    }
}

const HOOK_SHUTDOWN: Flag = flag(
    &["--hook-shutdown"],
    &[&[], &["60"], &["60", "give_up"], &["60", "delete", "3"]],
);

const MP_FLAGS_CREATE: &[Flag] = &[
    flag(
        &["--type"],
        &[&["prometheus"], &["static"], &["kafka"], &["influx"]],
    )
    .with_base(&["obj"]),
    flag(&["--url"], &[&["http://prometheus:9090"]]),
    flag(&["-m", "--metric"], &[&["heat", "0.5"]]),
    flag(&["--table"], ONE),
    flag(&["--comparison-column"], ONE),
    flag(&["--value-column"], ONE),
    flag(&["--token"], ONE),
    flag(&["--org"], ONE),
    flag(&["--bucket"], ONE),
    OUTPUT,
    NAMESPACE,
];

const MP_FLAGS_UPDATE: &[Flag] = &[
    flag(&["--url"], &[&["http://prometheus:9090"]]),
    flag(&["-m", "--metric"], &[&["heat", "0.5"]]),
    flag(&["--table"], ONE),
    flag(&["--comparison-column"], ONE),
    flag(&["--value-column"], ONE),
    flag(&["--token"], ONE),
    flag(&["--org"], ONE),
    flag(&["--bucket"], ONE),
    OUTPUT,
    NAMESPACE,
];

const ALLOWED_VALUES: Flag = flag(&["--allowed-values"], &[&[], &["1"], &["1", "2", "3"]]);

const KINDS: &[Kind] = &[
    // rok/kubernetes.py: application = kubernetes.subparser("application",
    // aliases=["app"]).
    Kind {
        groups: KUBE,
        names: &["app", "application"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "create",
                base: &["obj", "-f", "app.yaml"],
                flags: &[
                    flag(&["-f", "--file"], &[&["app.yaml"]]).with_base(&["obj"]),
                    flag(&["-u", "--url"], &[&["https://example.com/t.yaml"]]).with_base(&["obj"]),
                    flag(&["-O", "--observer_schema_file"], &[&["schema.yaml"]]),
                    flag(&["--enable-migration"], SWITCH),
                    flag(&["--disable-migration"], SWITCH),
                    flag(
                        &["--wait"],
                        &[&[], &["creating"], &["pending"], &["running"]],
                    ),
                    flag(&["-L", "--cluster-label-constraint"], &[&["location=DE"]]),
                    flag(&["-R", "--cluster-resource-constraint"], ONE),
                    flag(&["-M", "--cluster-metric-constraint"], &[&["heat > 0.5"]]),
                    LABEL,
                    flag(&["--hook-complete"], SWITCH),
                    HOOK_SHUTDOWN,
                    BACKOFF,
                    BACKOFF_DELAY,
                    BACKOFF_LIMIT,
                    flag(&["--auto-cluster-create"], SWITCH),
                    flag(&["-i", "--inject"], &[&["KEY=VALUE"]]),
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["-f", "--file"], &[&["app.yaml"]]),
                    flag(&["-u", "--url"], &[&["https://example.com/t.yaml"]]),
                    flag(&["-O", "--observer_schema_file"], &[&["schema.yaml"]]),
                    flag(&["--enable-migration"], SWITCH),
                    flag(&["--disable-migration"], SWITCH),
                    flag(&["--wait"], &[&[], &["reconciling"], &["running"]]),
                    flag(&["-L", "--cluster-label-constraint"], &[&["location=DE"]]),
                    flag(&["-R", "--cluster-resource-constraint"], ONE),
                    flag(&["-M", "--cluster-metric-constraint"], &[&["heat > 0.5"]]),
                    LABEL,
                    flag(&["--hook-complete"], SWITCH),
                    HOOK_SHUTDOWN,
                    BACKOFF,
                    BACKOFF_DELAY,
                    BACKOFF_LIMIT,
                    flag(&["--remove-existing-labels"], SWITCH),
                    flag(&["--remove-existing-label-constraints"], SWITCH),
                    flag(&["--remove-existing-resource-constraints"], SWITCH),
                    flag(&["--remove-existing-metric-constraints"], SWITCH),
                    // krake-api.md 5.2: "update NAME [...same as create".
                    flag(&["--auto-cluster-create"], SWITCH),
                    flag(&["-i", "--inject"], &[&["KEY=VALUE"]]),
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            Verb {
                name: "delete",
                base: &["obj"],
                flags: &[
                    flag(&["--wait"], &[&[], &["deleting"], &["deleted"]]),
                    FORCE,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("retry"),
        ],
    },
    Kind {
        groups: KUBE,
        names: &["cluster"],
        verbs: &[
            Verb {
                name: "register",
                base: &["-k", "kubeconfig.yaml"],
                flags: &[
                    flag(&["-k", "--kubeconfig"], &[&["kubeconfig.yaml"]]).with_base(&[]),
                    flag(&["-c", "--context"], &[&["fake-context"]]),
                    flag(&["-R", "--custom-resource"], ONE),
                    METRIC,
                    GLOBAL_METRIC,
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                    BACKOFF,
                    BACKOFF_DELAY,
                    BACKOFF_LIMIT,
                ],
            },
            Verb {
                name: "create",
                base: &["obj", "-f", "tosca.yaml"],
                flags: &[
                    flag(&["-f", "--file"], &[&["tosca.yaml"]]).with_base(&["obj"]),
                    flag(&["-R", "--custom-resource"], ONE),
                    METRIC,
                    GLOBAL_METRIC,
                    flag(&["--inherit-labels"], SWITCH),
                    flag(&["--inherit-metrics"], SWITCH),
                    flag(&["-L", "--cloud-label-constraint"], &[&["location=DE"]]),
                    flag(&["-M", "--cloud-metric-constraint"], &[&["heat > 0.5"]]),
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                    BACKOFF,
                    BACKOFF_DELAY,
                    BACKOFF_LIMIT,
                ],
            },
            list_namespaced(),
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["-k", "--kubeconfig"], &[&["kubeconfig.yaml"]]),
                    flag(&["-c", "--context"], &[&["fake-context"]]),
                    flag(&["-f", "--file"], &[&["tosca.yaml"]]),
                    flag(&["-R", "--custom-resource"], ONE),
                    METRIC,
                    GLOBAL_METRIC,
                    flag(&["-L", "--cloud-label-constraint"], &[&["location=DE"]]),
                    flag(&["-M", "--cloud-metric-constraint"], &[&["heat > 0.5"]]),
                    flag(&["--remove-existing-labels"], SWITCH),
                    flag(&["--remove-existing-metrics"], SWITCH),
                    flag(&["--remove-existing-cloud-label-constraints"], SWITCH),
                    flag(&["--remove-existing-cloud-metric-constraints"], SWITCH),
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                    BACKOFF,
                    BACKOFF_DELAY,
                    BACKOFF_LIMIT,
                ],
            },
            Verb {
                name: "delete",
                base: &["obj"],
                flags: &[FORCE, NAMESPACE, OUTPUT],
            },
        ],
    },
    // rok/infrastructure.py: globalinfrastructureprovider, aliases
    // ["gprovider", "gip"]; not namespaced.
    Kind {
        groups: INFRA,
        names: &["globalinfrastructureprovider", "gprovider", "gip"],
        verbs: &[
            list_global(),
            Verb {
                name: "register",
                // --password is prompted for when missing.
                base: &["obj", "--type", "im", "--url", "http://im:8800"],
                flags: &[
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--token"], ONE),
                    OUTPUT,
                ],
            },
            named_global("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--url"], &[&["http://im:8800"]]),
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--token"], ONE),
                    OUTPUT,
                ],
            },
            named_global("delete"),
        ],
    },
    Kind {
        groups: INFRA,
        names: &["infrastructureprovider", "provider", "ip"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "register",
                base: &["obj", "--type", "im", "--url", "http://im:8800"],
                flags: &[
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--token"], ONE),
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--url"], &[&["http://im:8800"]]),
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--token"], ONE),
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("delete"),
        ],
    },
    // rok/infrastructure.py: globalcloud, aliases ["gcloud", "gc"].
    Kind {
        groups: INFRA,
        names: &["globalcloud", "gcloud", "gc"],
        verbs: &[
            list_global(),
            Verb {
                name: "register",
                // --password is prompted for when missing (krake-api.md 5.2).
                base: &[
                    "obj",
                    "--type",
                    "openstack",
                    "--url",
                    "https://keystone:5000/v3",
                    "--username",
                    "u",
                    "--project",
                    "p",
                    "--global-infra-provider",
                    "gip",
                ],
                flags: &[
                    flag(&["--password"], ONE),
                    flag(&["--domain-name"], ONE),
                    flag(&["--domain-id"], ONE),
                    GLOBAL_METRIC,
                    LABEL,
                    OUTPUT,
                ],
            },
            named_global("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--global-infra-provider"], ONE),
                    flag(&["--url"], &[&["https://keystone:5000/v3"]]),
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--project"], ONE),
                    flag(&["--domain-name"], ONE),
                    flag(&["--domain-id"], ONE),
                    GLOBAL_METRIC,
                    LABEL,
                    OUTPUT,
                ],
            },
            named_global("delete"),
        ],
    },
    Kind {
        groups: INFRA,
        names: &["cloud"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "register",
                base: &[
                    "obj",
                    "--type",
                    "openstack",
                    "--url",
                    "https://keystone:5000/v3",
                    "--username",
                    "u",
                    "--project",
                    "p",
                    "--infra-provider",
                    "ip",
                ],
                flags: &[
                    flag(&["--global-infra-provider"], ONE).with_base(&[
                        "obj",
                        "--type",
                        "openstack",
                        "--url",
                        "https://keystone:5000/v3",
                        "--username",
                        "u",
                        "--project",
                        "p",
                    ]),
                    flag(&["--password"], ONE),
                    flag(&["--domain-name"], ONE),
                    flag(&["--domain-id"], ONE),
                    METRIC,
                    GLOBAL_METRIC,
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--infra-provider"], ONE),
                    flag(&["--global-infra-provider"], ONE),
                    flag(&["--url"], &[&["https://keystone:5000/v3"]]),
                    flag(&["--username"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--project"], ONE),
                    flag(&["--domain-name"], ONE),
                    flag(&["--domain-id"], ONE),
                    METRIC,
                    GLOBAL_METRIC,
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("delete"),
        ],
    },
    // rok/core.py: metricsprovider, aliases ["mp"].
    Kind {
        groups: CORE,
        names: &["metricsprovider", "mp"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "create",
                base: &["obj", "--type", "static"],
                flags: MP_FLAGS_CREATE,
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: MP_FLAGS_UPDATE,
            },
            named_namespaced("delete"),
        ],
    },
    Kind {
        groups: CORE,
        names: &["globalmetricsprovider", "gmp"],
        verbs: &[
            list_global(),
            Verb {
                name: "create",
                base: &["obj", "--type", "static"],
                // Without -n: global.
                flags: &[
                    flag(
                        &["--type"],
                        &[&["prometheus"], &["static"], &["kafka"], &["influx"]],
                    )
                    .with_base(&["obj"]),
                    flag(&["--url"], &[&["http://prometheus:9090"]]),
                    flag(&["-m", "--metric"], &[&["heat", "0.5"]]),
                    flag(&["--table"], ONE),
                    flag(&["--comparison-column"], ONE),
                    flag(&["--value-column"], ONE),
                    flag(&["--token"], ONE),
                    flag(&["--org"], ONE),
                    flag(&["--bucket"], ONE),
                    OUTPUT,
                ],
            },
            named_global("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--url"], &[&["http://prometheus:9090"]]),
                    flag(&["-m", "--metric"], &[&["heat", "0.5"]]),
                    flag(&["--table"], ONE),
                    flag(&["--comparison-column"], ONE),
                    flag(&["--value-column"], ONE),
                    flag(&["--token"], ONE),
                    flag(&["--org"], ONE),
                    flag(&["--bucket"], ONE),
                    OUTPUT,
                ],
            },
            named_global("delete"),
        ],
    },
    // rok/core.py: metric = core.subparser("metric"), provider flag
    // --mp-name.
    Kind {
        groups: CORE,
        names: &["metric"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "create",
                base: &["obj", "--mp-name", "prom", "--min", "0", "--max", "1"],
                flags: &[
                    flag(&["--metric-name"], ONE),
                    flag(&["--min"], &[&["-1"], &["0.5"]]),
                    flag(&["--max"], &[&["10"], &["0.5"]]),
                    ALLOWED_VALUES,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--mp-name"], ONE),
                    flag(&["--metric-name"], ONE),
                    flag(&["--min"], &[&["-1"], &["0.5"]]),
                    flag(&["--max"], &[&["10"], &["0.5"]]),
                    ALLOWED_VALUES,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("delete"),
        ],
    },
    // rok/core.py: globalmetric, aliases ["gm"], provider flag --gmp-name
    // (create: required=True; update: optional).
    Kind {
        groups: CORE,
        names: &["globalmetric", "gm"],
        verbs: &[
            list_global(),
            Verb {
                name: "create",
                base: &["obj", "--gmp-name", "prom", "--min", "0", "--max", "1"],
                flags: &[
                    flag(&["--metric-name"], ONE),
                    flag(&["--min"], &[&["-1"], &["0.5"]]),
                    flag(&["--max"], &[&["10"], &["0.5"]]),
                    ALLOWED_VALUES,
                    OUTPUT,
                ],
            },
            named_global("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--gmp-name"], ONE),
                    flag(&["--metric-name"], ONE),
                    flag(&["--min"], &[&["-1"], &["0.5"]]),
                    flag(&["--max"], &[&["10"], &["0.5"]]),
                    ALLOWED_VALUES,
                    OUTPUT,
                ],
            },
            named_global("delete"),
        ],
    },
    // rok/openstack.py: project; without --auth-url, --user-id,
    // --password, --project-id, Krake reads OS_AUTH_URL, OS_USER_ID,
    // OS_PASSWORD, OS_PROJECT_ID.
    Kind {
        groups: OS,
        names: &["project"],
        verbs: &[
            list_namespaced(),
            Verb {
                name: "create",
                base: &["obj", "--template", "t"],
                flags: &[
                    flag(&["--auth-url"], &[&["https://keystone:5000/v3"]]),
                    flag(&["--application-credential"], &[&["id", "secret"]]),
                    flag(&["--user-id"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--project-id"], ONE),
                    METRIC,
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--auth-url"], &[&["https://keystone:5000/v3"]]),
                    flag(&["--template"], ONE),
                    flag(&["--application-credential"], &[&["id", "secret"]]),
                    flag(&["--user-id"], ONE),
                    flag(&["--password"], ONE),
                    flag(&["--project-id"], ONE),
                    METRIC,
                    LABEL,
                    NAMESPACE,
                ],
            },
            named_namespaced("delete"),
        ],
    },
    Kind {
        groups: OS,
        names: &["cluster"],
        verbs: &[
            Verb {
                name: "create",
                base: &["obj"],
                flags: &[
                    flag(&["--master-count"], &[&["1"]]),
                    flag(&["--node-count"], &[&["3"]]),
                    flag(&["-L", "--project-label-constraint"], &[&["location=DE"]]),
                    METRIC,
                    LABEL,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            list_namespaced(),
            named_namespaced("get"),
            Verb {
                name: "update",
                base: &["obj"],
                flags: &[
                    flag(&["--node-count"], &[&["3"]]),
                    flag(&["-L", "--project-label-constraint"], &[&["location=DE"]]),
                    METRIC,
                    NAMESPACE,
                    OUTPUT,
                ],
            },
            named_namespaced("delete"),
        ],
    },
];

impl Flag {
    const fn with_base(self, base: &'static [&'static str]) -> Flag {
        Flag {
            base: Some(base),
            ..self
        }
    }
}

/// Krake's top-level flags (krake-api.md 5.2; the transcripts' usage line:
/// `usage: krakectl [-h] [--print-completion {bash,zsh,tcsh}] <command> ...`).
const TOP_LEVEL: &[&[&str]] = &[
    &["--print-completion", "bash"],
    &["--print-completion", "zsh"],
    &["--print-completion", "tcsh"],
];

/// Repeated flags: argparse takes the last value of a repeated single-valued
/// flag and accepts a repeated switch.
const REPEATS: &[&str] = &[
    "kube app get obj -n a -n testing",
    "kube app delete obj --force --force",
    "kube app list -o json -o yaml",
    "core mp create obj --type static --type prometheus",
    "core metric create obj --mp-name a --mp-name prom --min 0 --max 1 --min -1",
];

/// The command lines of krake-testkit/wire/krakectl/krakectl_transcript*.txt that
/// Krake's krakectl accepted (exit 0 or 1: not a usage error).
const TRANSCRIPTS: &[&str] = &[
    "kube cluster register -k fake-kubeconfig.yaml -n testing",
    "kube cluster list -n testing",
    "kube cluster get fake-cluster -n testing",
    "kube cluster get fake-cluster -n testing -o json",
    "kube cluster update fake-cluster -n testing -l env=prod",
    "kube app create -f app.yaml echo-demo -n testing",
    "kube app list -n testing",
    "kube app get echo-demo -n testing",
    "kube app get echo-demo -n testing -o yaml",
    "kube app update echo-demo -n testing -l tier=web",
    "kube app get nope -n testing",
    "kube app delete echo-demo -n testing",
    "kube app delete echo-demo -n testing --force",
    "kube cluster delete fake-cluster -n testing",
    "kube cluster delete fake-cluster -n testing --force",
    "kube app create -f app.yaml defaultns",
    "kube app list",
    "kube app list -a",
    "kube cluster list -a",
    "kube app create -f app.yaml app-on-cluster -n testing --cluster-label-constraint location=DE",
    "kube app list -a -o json",
    "kube app retry app-on-cluster -n testing",
    "kube app delete app-on-cluster -n testing --force",
    "kube app delete defaultns --force",
    "core gm list",
    "core gmp list",
    "core mp list -n testing",
    "core metric list -n testing",
    "infra cloud list -n testing",
    "infra gcloud list",
];

/// Every argv of Krake's spellings, with where it comes from.
fn cases() -> Vec<Vec<String>> {
    let argv = |parts: &[&str]| -> Vec<String> {
        std::iter::once("krakectl")
            .chain(parts.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let mut cases = Vec::new();
    for top in TOP_LEVEL {
        cases.push(argv(top));
    }
    for line in TRANSCRIPTS.iter().chain(REPEATS) {
        cases.push(argv(&line.split(' ').collect::<Vec<_>>()));
    }
    for help in ["-h", "--help"] {
        cases.push(argv(&[help]));
        for kind in KINDS {
            for group in kind.groups {
                cases.push(argv(&[group, help]));
                for name in kind.names {
                    cases.push(argv(&[group, name, help]));
                }
            }
        }
    }
    for kind in KINDS {
        for verb in kind.verbs {
            // Every spelling of the group and the kind, with the bare verb
            // and its required arguments, and asking for help.
            for group in kind.groups {
                for name in kind.names {
                    let mut parts = vec![*group, *name, verb.name];
                    parts.extend_from_slice(verb.base);
                    cases.push(argv(&parts));
                    for help in ["-h", "--help"] {
                        cases.push(argv(&[*group, *name, verb.name, help]));
                    }
                }
            }
            // Every spelling of every flag with every value list, on the
            // kind's first spellings.
            for flag in verb.flags.iter().chain([&CONFIG]) {
                for spelling in flag.names {
                    for values in flag.values {
                        let mut parts = vec![kind.groups[0], kind.names[0], verb.name];
                        parts.extend_from_slice(flag.base.unwrap_or(verb.base));
                        parts.push(spelling);
                        parts.extend_from_slice(values);
                        cases.push(argv(&parts));
                        // `--flag=value`, as argparse accepts it.
                        if spelling.starts_with("--") && values.len() == 1 {
                            let joined = format!("{spelling}={}", values[0]);
                            let mut parts: Vec<String> = argv(&[kind.groups[0], kind.names[0]]);
                            parts.push(verb.name.to_owned());
                            parts.extend(
                                flag.base.unwrap_or(verb.base).iter().map(|s| s.to_string()),
                            );
                            parts.push(joined);
                            cases.push(parts);
                        }
                    }
                }
            }
            // argparse's abbreviations (allow_abbrev): each long flag by
            // its shortest prefix that no other long flag of Krake's verb
            // starts with.
            let longs: Vec<&str> = verb
                .flags
                .iter()
                .chain([&CONFIG])
                .flat_map(|flag| flag.names.iter().chain(flag.base.unwrap_or(&[])))
                .chain(verb.base)
                .chain(&["--help"])
                .copied()
                .filter(|name| name.starts_with("--"))
                .collect();
            for flag in verb.flags.iter().chain([&CONFIG]) {
                for spelling in flag.names.iter().filter(|n| n.starts_with("--")) {
                    let Some(prefix) =
                        (3..spelling.len())
                            .map(|end| &spelling[..end])
                            .find(|prefix| {
                                longs
                                    .iter()
                                    .all(|other| other == spelling || !other.starts_with(prefix))
                            })
                    else {
                        continue;
                    };
                    let values = flag.values[flag.values.len() - 1];
                    let mut parts = vec![kind.groups[0], kind.names[0], verb.name];
                    parts.extend_from_slice(flag.base.unwrap_or(verb.base));
                    parts.push(prefix);
                    parts.extend_from_slice(values);
                    cases.push(argv(&parts));
                }
            }
            // All the flags of the verb at once (Krake's mutually exclusive
            // ones aside), once per kind.
            let mut parts = vec![kind.groups[0], kind.names[0], verb.name];
            parts.extend_from_slice(verb.base);
            for flag in verb.flags.iter().chain([&CONFIG]) {
                // Krake refuses (or ignores) these together with others of
                // the verb; each is tried alone above.
                let alone = [
                    "--disable-migration",
                    "--application-credential",
                    "--global-infra-provider",
                ];
                if flag.base.is_some()
                    || alone.contains(&flag.names[0])
                    || flag.names.iter().any(|n| verb.base.contains(n))
                {
                    continue;
                }
                parts.push(flag.names[flag.names.len() - 1]);
                parts.extend_from_slice(flag.values[flag.values.len() - 1]);
            }
            cases.push(argv(&parts));
        }
    }
    cases
}

/// The argvs of `cases` that our parser refuses, with clap's reason.
fn refused(command: &clap::Command, cases: &[Vec<String>]) -> Vec<String> {
    let mut refused = Vec::new();
    for case in cases {
        match command.clone().try_get_matches_from(case) {
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp) => {}
            Err(err) => {
                let reason = err.to_string();
                let reason = reason.lines().next().unwrap_or_default().to_owned();
                refused.push(format!("{}\n    {reason}", case[1..].join(" ")));
            }
        }
    }
    refused
}

#[test]
fn every_krake_spelling_is_accepted() {
    let cases = cases();
    assert!(cases.len() > 500, "only {} cases", cases.len());
    let refused = refused(&krakectl::cli::command(), &cases);
    assert!(
        refused.is_empty(),
        "{} of {} Krake command lines are refused:\n{}",
        refused.len(),
        cases.len(),
        refused.join("\n")
    );
}

/// The test can fail: a Krake flag or alias that our parser lacks is found.
#[test]
fn a_missing_spelling_is_found() {
    let cases = cases();
    // A parser whose `core globalmetric create` lacks `--gmp-name`.
    let command = krakectl::cli::command().mut_subcommand("core", |core| {
        core.mut_subcommand("globalmetric", |gm| {
            gm.mut_subcommand("create", |create| {
                create.mut_arg("mp-name", |arg| arg.long("renamed"))
            })
        })
    });
    let refused_cases = refused(&command, &cases);
    assert!(
        refused_cases
            .iter()
            .any(|r| r.starts_with("core globalmetric create obj --gmp-name")),
        "a parser without --gmp-name passed: {refused_cases:?}"
    );
    // A misspelt alias: every case spelling the kind `gip` as `gipp` is
    // refused.
    let misspelt: Vec<Vec<String>> = cases
        .iter()
        .filter(|case| case.get(2).is_some_and(|kind| kind == "gip"))
        .map(|case| {
            let mut case = case.clone();
            case[2] = "gipp".to_owned();
            case
        })
        .collect();
    assert!(!misspelt.is_empty());
    assert_eq!(
        refused(&krakectl::cli::command(), &misspelt).len(),
        misspelt.len()
    );
}
