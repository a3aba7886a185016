//! The web console in headless Chromium: krake-server with its controllers
//! and two fake Kubernetes clusters, and `console-tests/run.mjs` (Node with
//! playwright-core, driving Debian's `/usr/bin/chromium`) as a user would:
//! sign in with a token, register a cluster from a kubeconfig file and see
//! it go ONLINE, create an application from YAML and see it become RUNNING
//! without reloading, an invalid manifest's error at the field, edit, delete;
//! and, on a second server with RBAC, a user with a one-namespace role who
//! sees only that namespace and is told when an action is refused (403).
//! Screenshots of every page at desktop and phone widths go to
//! `target/console-screenshots/`.
//!
//! Needs `node`, `console-tests/node_modules` (`npm ci` in `console-tests/`)
//! and Chromium; `scripts/test` installs them. Without them the test fails
//! with a message saying so (it never passes without running the browser).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use krake_testkit::kube::FakeCluster;
use serde_json::json;
use support::krake::{CONFIG, Krake, NS};

const TOKEN: &str = "console-test-token";

const NO_CONTROLLERS: [&str; 6] = [
    "--no-gc",
    "--no-scheduler",
    "--no-kubernetes-application",
    "--no-kubernetes-cluster",
    "--no-magnum",
    "--no-infrastructure",
];

/// Roles for the restricted server: `carol` may read and create
/// applications (and read clusters) in `team-a` only, and delete nothing.
const ROLES: &str = "\
api: core
kind: Role
metadata: {name: team-a-editor}
rules:
- api: kubernetes
  resources: [applications, clusters]
  namespaces: [team-a]
  verbs: [get, list, create, update]
---
api: core
kind: RoleBinding
metadata: {name: carol}
users: [carol]
roles: [team-a-editor]
";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn require_tools(root: &Path) -> String {
    let chromium =
        std::env::var("KRAKE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the console's browser tests need Node.js (`node`): scripts/test installs it \
         (Debian package nodejs)"
    );
    assert!(
        root.join("console-tests/node_modules/playwright-core")
            .is_dir(),
        "the console's browser tests need playwright-core: run `npm ci` in console-tests/ \
         (scripts/test does)"
    );
    assert!(
        Path::new(&chromium).exists(),
        "the console's browser tests need Chromium at {chromium}: scripts/test installs it \
         (Debian package chromium; KRAKE_CHROMIUM names another)"
    );
    chromium
}

fn app(namespace: &str, name: &str) -> String {
    format!(
        "api: kubernetes\nkind: Application\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  manifest:\n  - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: {name}}}, \
         data: {{a: b}}}}\n  constraints: {{cluster: {{}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let root = workspace();
    let chromium = require_tools(&root);

    // The main server: static authentication (every token is `admin`),
    // everything allowed, every controller.
    let config = format!(
        "authentication:\n  allow_anonymous: false\n  strategy:\n    static: {{enabled: true, name: admin}}\n\
         authorization: always-allow\n{CONFIG}"
    );
    let krake = Krake::start_with(&config, &[]).await;
    let a = FakeCluster::start().await.unwrap();
    let b = FakeCluster::start().await.unwrap();
    krake.register_online("b", b.kubeconfig(), json!({})).await;

    // The restricted server: static authentication as `carol`, RBAC, an
    // application in carol's namespace and one in another.
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "{ROLES}---\n{}---\n{}",
            app("team-a", "mine"),
            app("team-b", "theirs")
        ),
    )
    .unwrap();
    let mut args = vec!["--bootstrap", bootstrap.to_str().unwrap()];
    args.extend(NO_CONTROLLERS);
    let restricted = Krake::start_with(
        "authentication:\n  allow_anonymous: false\n  strategy:\n    static: {enabled: true, name: carol}\n\
         authorization: RBAC\n",
        &args,
    )
    .await;

    let screenshots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let kubeconfig = dir.path().join("kubeconfig-a.json");
    std::fs::write(&kubeconfig, a.kubeconfig().to_string()).unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({
            "url": krake.url(),
            "token": TOKEN,
            "user": "admin",
            "namespace": NS,
            "kubeconfig": kubeconfig,
            "screenshots": screenshots,
            "restricted": {
                "url": restricted.url(),
                "token": "carols-token",
                "user": "carol",
                "namespace": "team-a",
                "visible": "mine",
                "hidden": "theirs",
            },
        })
        .to_string(),
    )
    .unwrap();

    // The script asks for a restart of the main server with a line
    // `@restart` and waits for `done` on its standard input.
    let mut child = std::process::Command::new("node")
        .arg(root.join("console-tests/run.mjs"))
        .arg(&settings)
        .env("KRAKE_CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let lines = child.stdout.take().unwrap();
    let errors = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(errors).read_to_string(&mut text);
        text
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(lines).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = String::new();
    while let Some(line) = rx.recv().await {
        if line == "@restart" {
            krake.restart().await;
            writeln!(stdin, "done").unwrap();
        } else if line == "@end" {
            break;
        } else {
            stdout.push_str(&line);
            stdout.push('\n');
        }
    }
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let stderr = stderr.join().unwrap();
    println!("{stdout}");
    assert!(
        status.success(),
        "the browser scenarios failed ({status}):\n{stdout}\n{stderr}\nkrake-server's log:\n{}",
        krake.log()
    );
}

/// The console is on by default next to the unchanged API, and
/// `--no-console` turns it off (404, the API's problem body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_by_default_and_not_with_no_console() {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let on = Krake::start_with("", &NO_CONTROLLERS).await;
    let shell = http
        .get(format!("{}/console/", on.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(shell.status(), 200);
    assert_eq!(shell.headers()["content-type"], "text/html; charset=utf-8");
    assert!(shell.headers().contains_key("content-security-policy"));
    let redirect = http
        .get(format!("{}/console", on.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/console/");
    let root: serde_json::Value = http
        .get(format!("{}/", on.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["version"], "1.0.1");
    // The API's own answers carry no console headers.
    let list = http
        .get(format!("{}/kubernetes/applications", on.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert!(!list.headers().contains_key("content-security-policy"));

    let mut args = vec!["--no-console"];
    args.extend(NO_CONTROLLERS);
    let off = Krake::start_with("", &args).await;
    for path in [
        "/console/",
        "/console",
        "/console/app.js",
        "/console/config.json",
    ] {
        let response = http
            .get(format!("{}{path}", off.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{path}: {content_type}"
        );
    }
}
