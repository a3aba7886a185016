//! The `krakectl` binary end to end against a real API server, on the
//! embedded store and on etcd: every command group, JSON and YAML output
//! parsed and checked, tables compared with what Krake's krakectl prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client};
use krake_data::kinds::kubernetes::{Application, ApplicationState};
use serde_json::Value;

const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- cluster:
    insecure-skip-tls-verify: true
    server: https://127.0.0.1:6443
  name: fake-cluster
- cluster:
    server: https://10.0.0.1:6443
  name: other-cluster
contexts:
- context:
    cluster: fake-cluster
    user: fake-user
  name: fake-context
- context:
    cluster: other-cluster
    user: fake-user
  name: other-context
current-context: fake-context
users:
- name: fake-user
  user:
    token: not-a-real-token
";

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-demo
spec:
  replicas: 1
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
    spec:
      containers:
      - name: echo
        image: ealen/echo-server
        env:
        - name: GREETING
          value: PLACEHOLDER
---
apiVersion: v1
kind: Service
metadata:
  name: echo-demo
spec:
  ports:
  - port: 80
";

/// The krakectl binary with a configuration pointing at one server.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("krakectl.yaml"),
            format!("api_url: {url}\nuser: system:admin\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("fake-kubeconfig.yaml"), KUBECONFIG).unwrap();
        std::fs::write(dir.path().join("app.yaml"), APP).unwrap();
        Cli { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_krakectl"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("COLUMNS")
            .env("XDG_CONFIG_HOME", self.path().join("xdg"))
            .env("HOME", self.path());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs and expects exit 0; answers stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.ok(&args).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs and expects exit 1 with a problem body on stderr; answers it.
    async fn problem(&self, args: &[&str]) -> Value {
        let output = self.run(args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        serde_json::from_str(&stderr).unwrap_or_else(|e| panic!("{args:?}: {e}: {stderr}"))
    }
}

/// Masks every digit, so that tables printed now can be compared with the
/// tables of Krake's transcript (same layout, other timestamps).
fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect()
}

fn field<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

const REGISTERED: &str = "\
+--------------------+---------------------+
| name               | fake-cluster        |
| namespace          | testing             |
| labels             | None                |
| created            | 2026-11-23 00:01:52 |
| modified           | 2026-11-23 00:01:52 |
| deleted            | None                |
| state              | PENDING             |
| reason             | None                |
| custom_resources   | []                  |
| metrics            | []                  |
| failing_metrics    | None                |
| label constraints  | []                  |
| metric constraints | []                  |
| scheduled_to       | None                |
| scheduled          | None                |
| running_on         | None                |
+--------------------+---------------------+
";

const CLUSTER_LIST: &str = "\
+------------+-----------+--------+------------+-----------+---------+---------+
|    name    | namespace | labels |  created   | modified  | deleted |  state  |
+============+===========+========+============+===========+=========+=========+
| fake-      | testing   | None   | 2026-11-23 | 2026-11-  | None    | PENDING |
| cluster    |           |        | 00:01:52   | 23        |         |         |
|            |           |        |            | 00:01:52  |         |         |
+------------+-----------+--------+------------+-----------+---------+---------+
";

const CLUSTER_GET: &str = "\
+-----------------------+---------------------+
| name                  | fake-cluster        |
| namespace             | testing             |
| labels                | None                |
| created               | 2026-11-23 00:01:52 |
| modified              | 2026-11-23 00:01:52 |
| deleted               | None                |
| state                 | PENDING             |
| reason                | None                |
| custom_resources      | []                  |
| metrics               | []                  |
| failing_metrics       | None                |
| label constraints     | []                  |
| metric constraints    | []                  |
| scheduled_to          | None                |
| scheduled             | None                |
| running_on            | None                |
| nodes                 | None                |
| nodes_pid_pressure    | None                |
| nodes_memory_pressure | None                |
| nodes_disk_pressure   | None                |
| backoff               | 1                   |
| backoff_delay         | 1                   |
| backoff_limit         | -1                  |
+-----------------------+---------------------+
";

const APP_CREATED: &str = "\
+-----------------------+-----------------------------------------------+
| name                  | echo-demo                                     |
| namespace             | testing                                       |
| labels                | None                                          |
| created               | 2026-11-23 00:01:54                           |
| modified              | 2026-11-23 00:01:54                           |
| deleted               | None                                          |
| state                 | PENDING                                       |
| reason                | None                                          |
| container_health      | 0 active / 0 failed / 0 succeeded / 0 desired |
| services              | None                                          |
| allow migration       | True                                          |
| label constraints     | ['location=DE']                               |
| resources constraints | []                                            |
| metric constraints    | []                                            |
| hooks                 | []                                            |
| scheduled_to          | None                                          |
| scheduled             | None                                          |
| running_on            | None                                          |
| backoff               | 1                                             |
| backoff_delay         | 1                                             |
| backoff_limit         | -1                                            |
+-----------------------+-----------------------------------------------+
";

const APP_LIST: &str = "\
+-----------+-----------+--------+------------+------------+---------+---------+
|   name    | namespace | labels |  created   |  modified  | deleted |  state  |
+===========+===========+========+============+============+=========+=========+
| echo-demo | testing   | None   | 2026-11-23 | 2026-11-23 | None    | PENDING |
|           |           |        | 00:01:54   | 00:01:54   |         |         |
+-----------+-----------+--------+------------+------------+---------+---------+
";

const EMPTY_APP_LIST: &str = "\
+------+-----------+--------+---------+----------+---------+-------+
| name | namespace | labels | created | modified | deleted | state |
+======+===========+========+=========+==========+=========+=======+
+------+-----------+--------+---------+----------+---------+-------+
";

const EMPTY_METRIC_LIST: &str = "\
+------+--------+--------+--------+--------+-------+-------+-----+-----+-------+
| name | namesp | labels | create | modifi | delet | provi | min | max | allow |
|      |  ace   |        |   d    |   ed   |  ed   |  der  |     |     | ed_va |
|      |        |        |        |        |       |       |     |     | lues  |
+======+========+========+========+========+=======+=======+=====+=====+=======+
+------+--------+--------+--------+--------+-------+-------+-----+-----+-------+
";

const EMPTY_CLOUD_LIST: &str = "\
+------+--------+-------+-------+-------+-------+------+-------+-------+-------+
| name | namesp | label | creat | modif | delet | type | metri | infra | state |
|      |  ace   |   s   |  ed   |  ied  |  ed   |      |  cs   | _prov |       |
|      |        |       |       |       |       |      |       | ider  |       |
+======+========+=======+=======+=======+=======+======+=======+=======+=======+
+------+--------+-------+-------+-------+-------+------+-------+-------+-------+
";

async fn kube(cli: &Cli) {
    // cluster register: the name comes from the kubeconfig's cluster entry
    let out = cli
        .ok(&[
            "kube",
            "cluster",
            "register",
            "-k",
            "fake-kubeconfig.yaml",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(normalize(&out), normalize(REGISTERED));
    let problem = cli
        .problem(&[
            "kube",
            "cluster",
            "register",
            "-k",
            "fake-kubeconfig.yaml",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(problem["status"], 409);
    assert_eq!(problem["title"], "RESOURCE_ALREADY_EXISTS");
    assert_eq!(
        problem["detail"],
        "Cluster 'fake-cluster' already exists in namespace 'testing'"
    );
    let out = cli.ok(&["kube", "cluster", "list", "-n", "testing"]).await;
    assert_eq!(normalize(&out), normalize(CLUSTER_LIST));
    let out = cli
        .ok(&["kube", "cluster", "get", "fake-cluster", "-n", "testing"])
        .await;
    assert_eq!(normalize(&out), normalize(CLUSTER_GET));
    let cluster = cli
        .json(&["kube", "cluster", "get", "fake-cluster", "-n", "testing"])
        .await;
    let kubeconfig = &cluster["spec"]["kubeconfig"];
    assert_eq!(kubeconfig["current-context"], "fake-context");
    assert_eq!(kubeconfig["contexts"].as_array().unwrap().len(), 1);
    assert_eq!(kubeconfig["clusters"][0]["name"], "fake-cluster");
    // keys are sorted, as Krake prints them
    let text = cli
        .ok(&[
            "kube",
            "cluster",
            "get",
            "fake-cluster",
            "-n",
            "testing",
            "-o",
            "json",
        ])
        .await;
    assert!(text.starts_with("{\n  \"api\": \"kubernetes\",\n  \"kind\": \"Cluster\",\n  \"metadata\": {\n    \"created\""), "{text}");

    // another context of the kubeconfig, with metrics and custom resources
    let other = cli
        .json(&[
            "kube",
            "cluster",
            "register",
            "-k",
            "fake-kubeconfig.yaml",
            "-c",
            "other-context",
            "-n",
            "testing",
            "--metric",
            "heat",
            "2.5",
            "--global-metric",
            "load",
            "1",
            "-R",
            "crontabs.stable.example.com",
            "-l",
            "location=DE",
            "--backoff_limit",
            "3",
        ])
        .await;
    assert_eq!(other["metadata"]["name"], "other-cluster");
    assert_eq!(other["metadata"]["labels"]["location"], "DE");
    assert_eq!(other["spec"]["metrics"][0]["name"], "heat");
    assert_eq!(other["spec"]["metrics"][0]["namespaced"], true);
    assert_eq!(other["spec"]["metrics"][1]["namespaced"], false);
    assert_eq!(
        other["spec"]["custom_resources"][0],
        "crontabs.stable.example.com"
    );
    assert_eq!(other["spec"]["backoff_limit"], 3);

    // a cluster created from a TOSCA template
    std::fs::write(
        cli.path().join("tosca.yaml"),
        "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template:\n  outputs:\n    kubeconfig:\n      value: x\n",
    )
    .unwrap();
    let from_tosca = cli
        .json(&[
            "kube",
            "cluster",
            "create",
            "tosca-cluster",
            "-n",
            "testing",
            "-f",
            "tosca.yaml",
            "--inherit-labels",
            "--inherit-metrics",
            "-L",
            "location=DE",
            "-M",
            "heat > 1",
        ])
        .await;
    assert_eq!(
        from_tosca["spec"]["tosca"]["tosca_definitions_version"],
        "tosca_simple_yaml_1_0"
    );
    assert_eq!(from_tosca["metadata"]["inherit_labels"], true);
    assert_eq!(from_tosca["spec"]["inherit_metrics"], true);
    assert_eq!(
        from_tosca["spec"]["constraints"]["cloud"]["labels"][0],
        "location=DE"
    );
    assert_eq!(
        from_tosca["spec"]["constraints"]["cloud"]["metrics"][0],
        "heat > 1"
    );
    cli.ok(&[
        "kube",
        "cluster",
        "delete",
        "tosca-cluster",
        "-n",
        "testing",
        "--force",
    ])
    .await;

    // update adds labels (or replaces them)
    let out = cli
        .ok(&[
            "kube",
            "cluster",
            "update",
            "fake-cluster",
            "-n",
            "testing",
            "-l",
            "env=prod",
        ])
        .await;
    assert!(
        out.contains("| labels             | env: prod           |"),
        "{out}"
    );
    let updated = cli
        .json(&[
            "kube",
            "cluster",
            "update",
            "other-cluster",
            "-n",
            "testing",
            "-l",
            "tier=db",
            "--remove-existing-labels",
            "--remove-existing-metrics",
            "--metric",
            "m2",
            "1",
        ])
        .await;
    assert_eq!(
        updated["metadata"]["labels"],
        serde_json::json!({"tier": "db"})
    );
    assert_eq!(names_of_metrics(&updated), ["m2"]);

    // listing across namespaces and with a selector
    let all = cli.json(&["kube", "cluster", "list", "-A"]).await;
    assert_eq!(names(&all), ["fake-cluster", "other-cluster"]);
    let selected = cli
        .json(&["kube", "cluster", "list", "-a", "-l", "env=prod"])
        .await;
    assert_eq!(names(&selected), ["fake-cluster"]);

    // applications
    let out = cli
        .ok(&[
            "kube",
            "app",
            "create",
            "-f",
            "app.yaml",
            "echo-demo",
            "-n",
            "testing",
            "--cluster-label-constraint",
            "location=DE",
        ])
        .await;
    assert_eq!(normalize(&out), normalize(APP_CREATED));
    let problem = cli
        .problem(&[
            "kube",
            "app",
            "create",
            "-f",
            "app.yaml",
            "echo-demo",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(problem["title"], "RESOURCE_ALREADY_EXISTS");
    let out = cli.ok(&["kube", "app", "list", "-n", "testing"]).await;
    assert_eq!(normalize(&out), normalize(APP_LIST));
    let yaml = cli
        .ok(&[
            "kube",
            "app",
            "get",
            "echo-demo",
            "-n",
            "testing",
            "-o",
            "yaml",
        ])
        .await;
    let app: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(app["spec"]["manifest"].as_array().unwrap().len(), 2);
    assert_eq!(app["spec"]["manifest"][0]["kind"], "Deployment");
    assert_eq!(
        app["spec"]["constraints"]["cluster"]["labels"][0],
        "location=DE"
    );

    let with_flags = cli
        .json(&[
            "kube",
            "app",
            "create",
            "-f",
            "app.yaml",
            "hooked",
            "-n",
            "testing",
            "--hook-complete",
            "--hook-shutdown",
            "30",
            "delete",
            "2",
            "--disable-migration",
            "-R",
            "crontabs.stable.example.com",
            "-M",
            "heat > 0.5",
            "-l",
            "tier=web",
            "--backoff",
            "2",
            "--backoff_delay",
            "5",
            "--backoff_limit",
            "4",
            "--inject",
            "PLACEHOLDER=hello",
            "--auto-cluster-create",
        ])
        .await;
    assert_eq!(
        with_flags["spec"]["hooks"],
        serde_json::json!(["complete", "shutdown"])
    );
    assert_eq!(with_flags["spec"]["shutdown_grace_time"], 30);
    assert_eq!(with_flags["spec"]["shutdown_failure_strategy"], "delete");
    assert_eq!(with_flags["spec"]["shutdown_retry_count"], 2);
    assert_eq!(with_flags["spec"]["constraints"]["migration"], false);
    assert_eq!(
        with_flags["spec"]["constraints"]["cluster"]["metrics"][0],
        "heat > 0.5"
    );
    assert_eq!(with_flags["spec"]["backoff_delay"], 5);
    assert_eq!(with_flags["spec"]["auto_cluster_create"], true);
    assert_eq!(
        with_flags["spec"]["manifest"][0]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "hello"
    );

    // TOSCA and CSAR by URL, a TOSCA template from a file
    let by_url = cli
        .json(&[
            "kube",
            "app",
            "create",
            "tosca-url",
            "-n",
            "testing",
            "-u",
            "http://example.invalid/app.yaml",
        ])
        .await;
    assert_eq!(by_url["spec"]["tosca"], "http://example.invalid/app.yaml");
    let csar = cli
        .json(&[
            "kube",
            "app",
            "create",
            "csar",
            "-n",
            "testing",
            "-u",
            "http://example.invalid/app.csar",
        ])
        .await;
    assert_eq!(csar["spec"]["csar"], "http://example.invalid/app.csar");
    let tosca_file = cli
        .json(&[
            "kube",
            "app",
            "create",
            "tosca-file",
            "-n",
            "testing",
            "-f",
            "tosca.yaml",
        ])
        .await;
    assert_eq!(
        tosca_file["spec"]["tosca"]["tosca_definitions_version"],
        "tosca_simple_yaml_1_0"
    );
    for name in ["tosca-url", "csar", "tosca-file"] {
        cli.ok(&["kube", "app", "delete", name, "-n", "testing", "--force"])
            .await;
    }
    // a stateful application that may migrate gets Krake's warning
    std::fs::write(
        cli.path().join("stateful.yaml"),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n",
    )
    .unwrap();
    let output = cli
        .run(&[
            "kube",
            "app",
            "create",
            "-f",
            "stateful.yaml",
            "db",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("warning: migration is enabled"));
    cli.ok(&["kube", "app", "delete", "db", "-n", "testing", "--force"])
        .await;

    let updated = cli
        .json(&[
            "kube",
            "app",
            "update",
            "hooked",
            "-n",
            "testing",
            "-l",
            "env=dev",
            "-L",
            "location=FR",
            "--remove-existing-metric-constraints",
            "--enable-migration",
        ])
        .await;
    assert_eq!(
        updated["metadata"]["labels"],
        serde_json::json!({"tier": "web", "env": "dev"})
    );
    assert_eq!(
        updated["spec"]["constraints"]["cluster"]["labels"],
        serde_json::json!(["location=FR"])
    );
    assert_eq!(
        updated["spec"]["constraints"]["cluster"]["metrics"],
        serde_json::json!([])
    );
    assert_eq!(updated["spec"]["constraints"]["migration"], true);
    let web = cli
        .json(&["kube", "app", "list", "-n", "testing", "-l", "tier=web"])
        .await;
    assert_eq!(names(&web), ["hooked"]);

    let problem = cli
        .problem(&["kube", "app", "retry", "echo-demo", "-n", "testing"])
        .await;
    assert_eq!(problem["status"], 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("No migration or deletion retry needed")
    );
    let problem = cli
        .problem(&["kube", "app", "get", "nope", "-n", "testing"])
        .await;
    assert_eq!(problem["title"], "NOT_FOUND_ERROR");
    assert_eq!(
        problem["detail"],
        "'Application' 'nope' does not exist in namespace 'testing'"
    );

    // delete marks, --force removes
    let marked = cli
        .json(&["kube", "app", "delete", "echo-demo", "-n", "testing"])
        .await;
    assert!(marked["metadata"]["deleted"].is_string());
    cli.ok(&[
        "kube",
        "app",
        "delete",
        "echo-demo",
        "-n",
        "testing",
        "--force",
    ])
    .await;
    cli.ok(&[
        "kube", "app", "delete", "hooked", "-n", "testing", "--force",
    ])
    .await;
    let out = cli.ok(&["kube", "app", "list", "-n", "testing"]).await;
    assert_eq!(out, EMPTY_APP_LIST);

    // the default namespace is the configured user
    let created = cli
        .json(&["kube", "app", "create", "-f", "app.yaml", "defaultns"])
        .await;
    assert_eq!(created["metadata"]["namespace"], "system:admin");
    let listed = cli.json(&["kube", "app", "list"]).await;
    assert_eq!(names(&listed), ["defaultns"]);
    cli.ok(&["kube", "app", "delete", "defaultns", "--force"])
        .await;
    for name in ["fake-cluster", "other-cluster"] {
        cli.ok(&[
            "kube", "cluster", "delete", name, "-n", "testing", "--force",
        ])
        .await;
    }
    assert_eq!(
        cli.json(&["kube", "cluster", "list", "-A"]).await,
        serde_json::json!([])
    );
}

fn names_of_metrics(cluster: &Value) -> Vec<String> {
    cluster["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn infra(cli: &Cli) {
    let gip = cli
        .json(&[
            "infra",
            "gip",
            "register",
            "im-global",
            "--type",
            "im",
            "--url",
            "http://im.example:8800",
            "--token",
            "t",
        ])
        .await;
    assert_eq!(gip["spec"]["im"]["url"], "http://im.example:8800");
    assert_eq!(gip["metadata"]["namespace"], Value::Null);
    let ip = cli
        .json(&[
            "infra",
            "provider",
            "register",
            "im-local",
            "--url",
            "http://im.example:8800",
            "--username",
            "u",
            "--password",
            "p",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(ip["spec"]["type"], "im");
    assert_eq!(ip["spec"]["im"]["username"], "u");
    let problem = cli
        .problem(&[
            "infra",
            "ip",
            "register",
            "bad",
            "--url",
            "http://im.example",
            "-n",
            "testing",
        ])
        .await;
    assert_eq!(problem["status"], 422);

    assert_eq!(
        cli.ok(&["infra", "cloud", "list", "-n", "testing"]).await,
        EMPTY_CLOUD_LIST
    );
    assert_eq!(cli.ok(&["infra", "gcloud", "list"]).await, EMPTY_CLOUD_LIST);
    let cloud = cli
        .json(&[
            "infra",
            "cloud",
            "register",
            "os1",
            "-n",
            "testing",
            "--type",
            "openstack",
            "--url",
            "http://keystone.example:5000/v3",
            "--username",
            "u",
            "--password",
            "p",
            "--project",
            "proj",
            "--infra-provider",
            "im-local",
            "--metric",
            "heat",
            "2",
            "-l",
            "location=DE",
        ])
        .await;
    let openstack = &cloud["spec"]["openstack"];
    assert_eq!(openstack["auth"]["password"]["user"]["username"], "u");
    assert_eq!(
        openstack["auth"]["password"]["user"]["domain_name"],
        "Default"
    );
    assert_eq!(openstack["auth"]["password"]["project"]["name"], "proj");
    assert_eq!(openstack["infrastructure_provider"]["name"], "im-local");
    assert_eq!(openstack["infrastructure_provider"]["namespaced"], true);
    assert_eq!(cloud["status"]["state"], "ONLINE");
    let gcloud = cli
        .json(&[
            "infra",
            "gc",
            "register",
            "os-global",
            "--url",
            "http://keystone.example:5000/v3",
            "--username",
            "u",
            "--password",
            "p",
            "--project",
            "proj",
            "--global-infra-provider",
            "im-global",
        ])
        .await;
    assert_eq!(
        gcloud["spec"]["openstack"]["infrastructure_provider"]["namespaced"],
        false
    );
    let listed = cli.json(&["infra", "cloud", "list", "-A"]).await;
    assert_eq!(names(&listed), ["os1"]);
    let updated = cli
        .json(&[
            "infra",
            "cloud",
            "update",
            "os1",
            "-n",
            "testing",
            "--password",
            "new",
            "--remove-existing-labels",
        ])
        .await;
    assert_eq!(
        updated["spec"]["openstack"]["auth"]["password"]["user"]["password"],
        "new"
    );
    assert_eq!(updated["metadata"]["labels"], serde_json::json!({}));
    let out = cli
        .ok(&["infra", "cloud", "get", "os1", "-n", "testing"])
        .await;
    assert!(out.contains("| infra_provider | im-local"), "{out}");
    for args in [
        vec!["infra", "cloud", "delete", "os1", "-n", "testing"],
        vec!["infra", "gcloud", "delete", "os-global"],
        vec!["infra", "ip", "delete", "im-local", "-n", "testing"],
        vec!["infra", "gip", "delete", "im-global"],
    ] {
        let deleted = cli.json(&args).await;
        assert!(deleted["metadata"]["deleted"].is_string(), "{args:?}");
    }
}

async fn core(cli: &Cli) {
    assert_eq!(cli.ok(&["core", "gm", "list"]).await, EMPTY_METRIC_LIST);
    assert_eq!(
        cli.ok(&["core", "metric", "list", "-n", "testing"]).await,
        EMPTY_METRIC_LIST
    );
    let gmp = cli
        .json(&[
            "core",
            "gmp",
            "create",
            "static-mp",
            "--type",
            "static",
            "-m",
            "heat",
            "0.5",
            "-m",
            "load",
            "2",
        ])
        .await;
    assert_eq!(
        gmp["spec"]["static"]["metrics"],
        serde_json::json!({"heat": 0.5, "load": 2.0})
    );
    let mp = cli
        .json(&[
            "core",
            "mp",
            "create",
            "prom",
            "-n",
            "testing",
            "--type",
            "prometheus",
            "--url",
            "http://prometheus.example:9090",
        ])
        .await;
    assert_eq!(
        mp["spec"]["prometheus"]["url"],
        "http://prometheus.example:9090"
    );
    let kafka = cli
        .json(&[
            "core",
            "mp",
            "create",
            "kafka",
            "-n",
            "testing",
            "--type",
            "kafka",
            "--url",
            "http://kafka.example:8080",
            "--table",
            "t",
            "--comparison-column",
            "c",
            "--value-column",
            "v",
        ])
        .await;
    assert_eq!(kafka["spec"]["kafka"]["comparison_column"], "c");
    let out = cli.ok(&["core", "gmp", "list"]).await;
    assert!(out.contains("| static-mp |"), "{out}");
    assert!(out.contains("| static  |"), "{out}");

    let gm = cli
        .json(&[
            "core",
            "gm",
            "create",
            "heat",
            "--mp-name",
            "static-mp",
            "--min",
            "0",
            "--max",
            "1",
        ])
        .await;
    assert_eq!(
        gm["spec"]["provider"],
        serde_json::json!({"name": "static-mp", "metric": "heat"})
    );
    let metric = cli
        .json(&[
            "core",
            "metric",
            "create",
            "latency",
            "-n",
            "testing",
            "--mp-name",
            "prom",
            "--metric-name",
            "http_latency",
            "--min",
            "-1",
            "--max",
            "10",
            "--allowed-values",
            "1",
            "2",
        ])
        .await;
    assert_eq!(metric["spec"]["allowed_values"], serde_json::json!([1, 2]));
    assert_eq!(metric["spec"]["min"], -1.0);
    let problem = cli
        .problem(&[
            "core",
            "gm",
            "create",
            "bad",
            "--mp-name",
            "x",
            "--min",
            "2",
            "--max",
            "1",
        ])
        .await;
    assert_eq!(problem["status"], 422);
    let updated = cli
        .json(&["core", "gm", "update", "heat", "--max", "5"])
        .await;
    assert_eq!(updated["spec"]["max"], 5.0);
    assert_eq!(names(&cli.json(&["core", "gm", "list"]).await), ["heat"]);

    // beyond Krake: roles and role bindings
    let role = cli
        .json(&[
            "core",
            "role",
            "create",
            "reader",
            "--rule",
            "kubernetes:applications,clusters:testing:get,list",
        ])
        .await;
    assert_eq!(
        role["rules"][0],
        serde_json::json!({"api": "kubernetes", "resources": ["applications", "clusters"], "namespaces": ["testing"], "verbs": ["get", "list"]})
    );
    std::fs::write(
        cli.path().join("role.yaml"),
        "rules:\n- api: core\n  resources: [metrics]\n  namespaces: ['']\n  verbs: [get]\n",
    )
    .unwrap();
    let from_file = cli
        .json(&[
            "core",
            "role",
            "create",
            "metrics-reader",
            "-f",
            "role.yaml",
        ])
        .await;
    assert_eq!(from_file["rules"][0]["resources"][0], "metrics");
    let binding = cli
        .json(&[
            "core",
            "rolebinding",
            "create",
            "readers",
            "--user",
            "alice",
            "--user",
            "bob",
            "--role",
            "reader",
        ])
        .await;
    assert_eq!(binding["users"], serde_json::json!(["alice", "bob"]));
    let binding = cli
        .json(&[
            "core",
            "rolebinding",
            "update",
            "readers",
            "--role",
            "metrics-reader",
        ])
        .await;
    assert_eq!(
        binding["roles"],
        serde_json::json!(["reader", "metrics-reader"])
    );
    let out = cli.ok(&["core", "rolebinding", "get", "readers"]).await;
    assert!(out.contains("['alice', 'bob']"), "{out}");
    assert_eq!(
        names(&cli.json(&["core", "role", "list"]).await),
        ["metrics-reader", "reader"]
    );
    for args in [
        vec!["core", "role", "delete", "reader"],
        vec!["core", "rolebinding", "delete", "readers"],
        vec!["core", "metric", "delete", "latency", "-n", "testing"],
        vec!["core", "mp", "delete", "prom", "-n", "testing"],
    ] {
        cli.ok(&args).await;
    }
}

async fn openstack(cli: &Cli) {
    let project = cli
        .json(&[
            "os",
            "project",
            "create",
            "p1",
            "-n",
            "testing",
            "--auth-url",
            "http://keystone.example:5000/v3",
            "--template",
            "tmpl",
            "--application-credential",
            "id",
            "secret",
        ])
        .await;
    assert_eq!(project["spec"]["auth"]["type"], "application_credential");
    let project = cli
        .json(&[
            "os",
            "project",
            "update",
            "p1",
            "-n",
            "testing",
            "--user-id",
            "u",
            "--password",
            "p",
            "--project-id",
            "pid",
        ])
        .await;
    assert_eq!(project["spec"]["auth"]["password"]["user"]["id"], "u");
    let magnum = cli
        .json(&[
            "openstack",
            "cluster",
            "create",
            "m1",
            "-n",
            "testing",
            "--master-count",
            "1",
            "--node-count",
            "3",
            "-L",
            "location is DE",
        ])
        .await;
    assert_eq!(magnum["kind"], "MagnumCluster");
    assert_eq!(
        magnum["spec"]["constraints"]["project"]["labels"][0],
        "location is DE"
    );
    let magnum = cli
        .json(&[
            "os",
            "cluster",
            "update",
            "m1",
            "-n",
            "testing",
            "--node-count",
            "5",
        ])
        .await;
    assert_eq!(magnum["spec"]["node_count"], 5);
    let out = cli
        .ok(&["os", "cluster", "get", "m1", "-n", "testing"])
        .await;
    assert!(out.contains("| node_count   | 5"), "{out}");
    assert_eq!(
        names(&cli.json(&["os", "project", "list", "-n", "testing"]).await),
        ["p1"]
    );
    cli.ok(&["os", "cluster", "delete", "m1", "-n", "testing"])
        .await;
    cli.ok(&["os", "project", "delete", "p1", "-n", "testing"])
        .await;
}

async fn usage_errors(cli: &Cli) {
    for args in [
        vec!["kube", "app", "list", "--bogus"],
        vec!["kube", "app", "create", "x", "-n", "testing"],
        vec!["kube", "cluster", "register", "-n", "testing"],
        vec!["core", "gm", "create", "x", "--min", "0"],
        vec!["kube", "app", "list", "-o", "xml"],
        vec!["nope"],
    ] {
        let output = cli.run(&args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage") || stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
    }
    // a flag that parses but is not valid
    let output = cli
        .run(&["kube", "app", "create", "x", "-u", "http://x/tosca.txt"])
        .await;
    assert_eq!(output.status.code(), Some(2));
}

async fn everything(server: &TestServer) {
    let cli = Cli::new(&server.url());
    kube(&cli).await;
    infra(&cli).await;
    core(&cli).await;
    openstack(&cli).await;
    usage_errors(&cli).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_group_on_the_embedded_store() {
    let server = TestServer::embedded().await;
    everything(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_group_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    everything(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_events_as_they_come() {
    let server = TestServer::embedded().await;
    let cli = Cli::new(&server.url());
    cli.ok(&[
        "kube", "app", "create", "-f", "app.yaml", "first", "-n", "testing",
    ])
    .await;
    let mut child = cli
        .command(&[
            "kube",
            "app",
            "watch",
            "-n",
            "testing",
            "--max-events",
            "4",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read its lines as they come; the first is the current list.
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        receiver
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20 s")
    };
    let mut lines: Vec<Value> = vec![serde_json::from_str(&next_line()).unwrap()];
    cli.ok(&[
        "kube", "app", "create", "-f", "app.yaml", "second", "-n", "testing",
    ])
    .await;
    cli.ok(&[
        "kube", "app", "update", "second", "-n", "testing", "-l", "a=b",
    ])
    .await;
    cli.ok(&["kube", "app", "delete", "first", "-n", "testing", "--force"])
        .await;
    for _ in 0..3 {
        lines.push(serde_json::from_str(&next_line()).unwrap());
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let summary: Vec<String> = lines
        .iter()
        .map(|l| match l["type"].as_str().unwrap() {
            "RESTARTED" => format!("RESTARTED {:?}", names(&l["objects"])),
            other => format!(
                "{other} {}",
                l["object"]["metadata"]["name"].as_str().unwrap()
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "RESTARTED [\"first\"]",
            "ADDED second",
            "MODIFIED second",
            "DELETED first"
        ]
    );

    // table format: one line per event
    let child = cli
        .command(&["kube", "app", "watch", "-A", "--max-events", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text,
        "RESTARTED testing/second                           PENDING\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_the_state_until_it_is_reached() {
    let server = TestServer::embedded().await;
    let cli = Cli::new(&server.url());
    // Play the controller: set the application RUNNING a little later.
    let client = Client::new(&server.url()).unwrap();
    let controller = tokio::spawn(async move {
        let apps: Api<Application> = Api::namespaced(client, "testing");
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok(mut app) = apps.get("waited").await {
                app.status.state = ApplicationState::Running;
                apps.status(&app).await.unwrap();
                return;
            }
        }
    });
    let output = cli
        .run(&[
            "kube", "app", "create", "-f", "app.yaml", "waited", "-n", "testing", "--wait",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("| state                 | RUNNING"),
        "{stdout}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.trim_end().ends_with("waited: RUNNING"), "{stderr}");
    controller.await.unwrap();

    let output = cli
        .run(&[
            "kube", "app", "delete", "waited", "-n", "testing", "--force", "--wait",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("| state                 | DELETED"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_search_path_completions_and_connection_errors() {
    let server = TestServer::embedded().await;
    let cli = Cli::new(&server.url());
    // No ./krakectl.yaml: $XDG_CONFIG_HOME/krakectl.yaml is used.
    let elsewhere = tempfile::tempdir().unwrap();
    let xdg = cli.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(
        xdg.join("krakectl.yaml"),
        format!("api_url: {}\nuser: carol\n", server.url()),
    )
    .unwrap();
    let output = cli
        .command(&[
            "kube",
            "app",
            "create",
            "-f",
            cli.path().join("app.yaml").to_str().unwrap(),
            "x",
            "-o",
            "json",
        ])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(field(&created, "/metadata/namespace"), "carol");

    // An explicit --config wins, and must exist.
    let dead: PathBuf = cli.path().join("dead.yaml");
    std::fs::write(&dead, "api_url: http://127.0.0.1:1\n").unwrap();
    let output = cli
        .run(&["--config", dead.to_str().unwrap(), "kube", "app", "list"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("krakectl: request to the API failed"),
        "{stderr}"
    );
    let output = cli
        .run(&["--config", "missing.yaml", "kube", "app", "list"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.yaml does not exist"));

    for args in [
        vec!["completion", "bash"],
        vec!["--print-completion", "zsh"],
    ] {
        let out = cli.ok(&args).await;
        assert!(out.contains("krakectl"), "{args:?}");
        assert!(out.contains("rolebinding"), "{args:?}");
    }
    let help = cli.ok(&["kube", "--help"]).await;
    assert!(help.contains("[alias: application]"), "{help}");
    let wide = cli.ok(&["kube", "app", "list", "-A", "-o", "wide"]).await;
    assert!(
        wide.contains("scheduled_to") && wide.contains("carol"),
        "{wide}"
    );
}

/// Krake's spellings that the parser learnt (tests/krake_spellings.rs) do
/// what Krake's do: `--gmp-name`, `--allowed-values` without values, the
/// cloud password asked for, `OS_*` defaults of `os project create`,
/// `-L`/`--metric` on `os cluster update`, abbreviations, tcsh completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krake_spellings_do_what_krakes_do() {
    let server = TestServer::embedded().await;
    let cli = Cli::new(&server.url());

    let gm = cli
        .json(&[
            "core",
            "gm",
            "create",
            "heat",
            "--gmp-name",
            "static-mp",
            "--min",
            "0",
            "--max",
            "1",
            "--allowed-values",
            "1",
            "2",
        ])
        .await;
    assert_eq!(gm["spec"]["provider"]["name"], "static-mp");
    let gm = cli
        .json(&[
            "core",
            "gm",
            "update",
            "heat",
            "--gmp-name",
            "other-mp",
            "--allowed-values",
        ])
        .await;
    assert_eq!(gm["spec"]["provider"]["name"], "other-mp");
    assert_eq!(gm["spec"]["allowed_values"], serde_json::json!([1, 2]));
    // --mp-name stays an alias on globalmetric; abbreviations as argparse's.
    let gm = cli
        .json(&[
            "core",
            "gm",
            "update",
            "heat",
            "--mp-name",
            "static-mp",
            "--ma",
            "5",
        ])
        .await;
    assert_eq!(gm["spec"]["provider"]["name"], "static-mp");
    assert_eq!(gm["spec"]["max"], 5.0);

    // The cloud password is asked for when --password is missing.
    cli.ok(&[
        "infra",
        "gip",
        "register",
        "im-global",
        "--type",
        "im",
        "--url",
        "http://im:8800",
        "--token",
        "t",
    ])
    .await;
    let register = [
        "infra",
        "gc",
        "register",
        "os-global",
        "--type",
        "openstack",
        "--url",
        "http://keystone.example:5000/v3",
        "--username",
        "u",
        "--project",
        "proj",
        "--global-infra-provider",
        "im-global",
        "-o",
        "json",
    ];
    let mut command = cli.command(&register);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let gc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        gc["spec"]["openstack"]["auth"]["password"]["user"]["password"],
        "s3cret"
    );
    let mut command = cli.command(&register);
    command.stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--password"),
        "{output:?}"
    );

    // os project create: Keystone URL and credentials from OS_* variables.
    let mut command = cli.command(&[
        "os",
        "project",
        "create",
        "p1",
        "--template",
        "t",
        "-n",
        "testing",
        "-o",
        "json",
    ]);
    command
        .env("OS_AUTH_URL", "http://keystone.example:5000/v3")
        .env("OS_USER_ID", "uid")
        .env("OS_PASSWORD", "pw")
        .env("OS_PROJECT_ID", "pid");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let project: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(project["spec"]["url"], "http://keystone.example:5000/v3");
    assert_eq!(project["spec"]["auth"]["password"]["user"]["id"], "uid");
    assert_eq!(project["spec"]["auth"]["password"]["project"]["id"], "pid");

    // os cluster update: -L and --metric replace, as Krake's.
    cli.ok(&[
        "os", "cluster", "create", "mc", "-n", "testing", "-L", "a=b", "--metric", "m1", "1",
    ])
    .await;
    let mc = cli
        .json(&[
            "os", "cluster", "update", "mc", "-n", "testing", "-L", "c=d", "--metric", "m2", "2",
        ])
        .await;
    assert_eq!(
        mc["spec"]["constraints"]["project"]["labels"],
        serde_json::json!(["c=d"])
    );
    assert_eq!(mc["spec"]["metrics"][0]["name"], "m2");
    assert_eq!(mc["spec"]["metrics"].as_array().map(Vec::len), Some(1));

    // Krake's shells for completion include tcsh.
    let tcsh = cli.ok(&["--print-completion", "tcsh"]).await;
    assert!(tcsh.starts_with("complete krakectl 'p/1/("), "{tcsh}");
    assert!(tcsh.contains("'n/gm/("), "{tcsh}");
}
