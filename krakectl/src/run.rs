//! Runs a parsed command: finds the kind, builds the client from the
//! configuration, calls the API, prints the answer.

use std::io::Write;
use std::path::PathBuf;

use clap::ArgMatches;
use futures::{StreamExt, TryStreamExt};
use krake_client::{
    Client, DeleteParams, DynamicApi, ListParams, TlsOptions, WatchConfig, WatchEvent,
};
use krake_data::registry::Subresource;
use serde_json::Value;

use crate::catalog::{self, Flags, GROUPS, KindCommand};
use crate::config::{self, Config};
use crate::error::CliError;
use crate::output::{self, Detail, Format};
use crate::{body, wait};

/// The client of the configured API.
pub fn client(config: &Config) -> Result<Client, CliError> {
    let mut builder = Client::builder(&config.api_url);
    if config.tls.enabled {
        let tls = TlsOptions::from_files(
            config.tls.client_ca.as_deref(),
            config.tls.client_cert.as_deref(),
            config.tls.client_key.as_deref(),
        )?;
        builder = builder.tls(tls);
    }
    if let Some(token) = &config.token {
        builder = builder.token(token.clone());
    }
    Ok(builder.build()?)
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

struct Context {
    client: Client,
    config: Config,
    format: Format,
}

impl Context {
    fn namespace<'a>(&'a self, m: &'a ArgMatches) -> Option<&'a str> {
        m.try_get_one::<String>("namespace")
            .ok()
            .flatten()
            .map(String::as_str)
            .or(Some(self.config.user.as_str()))
    }

    fn api(&self, kind: &KindCommand, m: &ArgMatches) -> DynamicApi {
        DynamicApi::new(self.client.clone(), kind.info, self.namespace(m))
    }

    fn collection_api(&self, kind: &KindCommand, m: &ArgMatches) -> DynamicApi {
        let all = m
            .try_get_one::<bool>("all")
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false);
        let namespace = if all { None } else { self.namespace(m) };
        DynamicApi::new(self.client.clone(), kind.info, namespace)
    }

    fn show(&self, kind: &KindCommand, object: &Value, detail: Detail) {
        print(&output::object(kind.info.kind, object, self.format, detail));
    }
}

fn selector(m: &ArgMatches) -> ListParams {
    let mut params = ListParams::default();
    if let Ok(Some(selector)) = m.try_get_one::<String>("selector") {
        params = params.labels(selector.clone());
    }
    params
}

fn wanted_state(m: &ArgMatches) -> Option<String> {
    m.try_get_one::<String>("wait").ok().flatten().cloned()
}

fn name(m: &ArgMatches) -> String {
    m.try_get_one::<String>("name")
        .ok()
        .flatten()
        .cloned()
        .unwrap_or_default()
}

async fn maybe_wait(api: &DynamicApi, m: &ArgMatches, object: Value) -> Result<Value, CliError> {
    match wanted_state(m) {
        Some(wanted) => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            wait::wait_for(api, &name, &wanted, object, wait::WAIT_TIMEOUT).await
        }
        None => Ok(object),
    }
}

async fn run_verb(
    context: &Context,
    kind: &KindCommand,
    verb: &str,
    m: &ArgMatches,
) -> Result<(), CliError> {
    match verb {
        "list" => {
            let api = context.collection_api(kind, m);
            let items: Vec<Value> = api.list_stream(&selector(m), 500).try_collect().await?;
            print(&output::objects(kind.info.kind, &items, context.format));
        }
        "get" => {
            let object = context.api(kind, m).get(&name(m)).await?;
            context.show(kind, &object, Detail::Full);
        }
        "register" if kind.flags == Flags::Cluster => {
            let path = m
                .get_one::<String>("kubeconfig")
                .cloned()
                .unwrap_or_default();
            let context_name = m.get_one::<String>("context").cloned();
            let (_, cluster_name) =
                body::kubeconfig(std::path::Path::new(&path), context_name.as_deref())?;
            let object = body::create(kind, m, &cluster_name)?;
            let api = context.api(kind, m);
            let created = api.create(&object).await?;
            context.show(kind, &created, Detail::Short);
        }
        "create" | "register" => {
            let object = body::create(kind, m, &name(m))?;
            if let Some(warning) = body::migration_warning(&object) {
                eprintln!("{warning}");
            }
            let api = context.api(kind, m);
            let created = api.create(&object).await?;
            let created = maybe_wait(&api, m, created).await?;
            context.show(kind, &created, Detail::Short);
        }
        "update" => {
            let api = context.api(kind, m);
            let name = name(m);
            let mut object = api.get(&name).await?;
            body::apply(kind, m, &mut object, &name, true)?;
            let updated = api.update(&object).await?;
            let updated = maybe_wait(&api, m, updated).await?;
            context.show(kind, &updated, Detail::Short);
        }
        "delete" => {
            let api = context.api(kind, m);
            let force = m
                .try_get_one::<bool>("force")
                .ok()
                .flatten()
                .copied()
                .unwrap_or(false);
            let params = if force {
                DeleteParams::force()
            } else {
                DeleteParams::default()
            };
            let deleted = api.delete(&name(m), &params).await?;
            let deleted = maybe_wait(&api, m, deleted).await?;
            context.show(kind, &deleted, Detail::Short);
        }
        "retry" => {
            let api = context.api(kind, m);
            let object = api.subresource(Subresource::Retry, &name(m), None).await?;
            context.show(kind, &object, Detail::Short);
        }
        "watch" => watch(context, kind, m).await?,
        other => return Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
    Ok(())
}

async fn watch(context: &Context, kind: &KindCommand, m: &ArgMatches) -> Result<(), CliError> {
    let api = context.collection_api(kind, m);
    let mut config = WatchConfig::default();
    if let Some(selector) = selector(m).label_selector {
        config = config.labels(selector);
    }
    let limit = m.get_one::<u64>("max-events").copied();
    let mut events = std::pin::pin!(api.watch(config));
    let mut count = 0u64;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                eprintln!("{}", describe_client_error(&err));
                continue;
            }
        };
        let type_name = event.type_name();
        let text = match (&event, context.format) {
            (WatchEvent::Restarted(all), Format::Json) => {
                serde_json::json!({"type": type_name, "objects": output::sorted(&Value::Array(all.clone()))}).to_string() + "\n"
            }
            (WatchEvent::Restarted(all), Format::Yaml) => {
                output::yaml(&serde_json::json!({"type": type_name, "objects": all})) + "---\n"
            }
            (WatchEvent::Restarted(all), _) if all.is_empty() => format!("{type_name}\n"),
            (WatchEvent::Restarted(all), _) => all
                .iter()
                .map(|o| output::event_line(type_name, o) + "\n")
                .collect(),
            (WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o), Format::Json) => {
                serde_json::json!({"type": type_name, "object": output::sorted(o)}).to_string() + "\n"
            }
            (WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o), Format::Yaml) => {
                output::yaml(&serde_json::json!({"type": type_name, "object": o})) + "---\n"
            }
            (WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o), _) => {
                output::event_line(type_name, o) + "\n"
            }
        };
        print(&text);
        count += 1;
        if limit.is_some_and(|limit| count >= limit) {
            break;
        }
    }
    Ok(())
}

/// The text printed for a failed command: the problem body as JSON (keys
/// sorted, as Krake prints it), or the error and its causes.
pub fn describe_error(err: &CliError) -> String {
    if let CliError::Client(client) = err {
        return describe_client_error(client);
    }
    describe_chain(err)
}

/// [`describe_error`] of a client error.
pub fn describe_client_error(err: &krake_client::Error) -> String {
    match err.problem() {
        Some(problem) => output::json(&serde_json::to_value(problem).unwrap_or(Value::Null)),
        None => describe_chain(err),
    }
}

fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut text = format!("krakectl: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Runs the parsed command line.
pub async fn run(matches: &ArgMatches) -> Result<(), CliError> {
    let explicit: Option<PathBuf> = matches.get_one::<PathBuf>("config").cloned();
    let (config, _) = config::load(explicit.as_deref())?;
    let format = matches
        .get_one::<Format>("output")
        .copied()
        .unwrap_or(Format::Table);
    let Some((group_name, group_matches)) = matches.subcommand() else {
        return Err(CliError::Usage("a command is required".to_owned()));
    };
    let group = GROUPS
        .iter()
        .find(|g| g.name == group_name)
        .ok_or_else(|| CliError::Usage(format!("unknown command {group_name:?}")))?;
    let Some((kind_name, kind_matches)) = group_matches.subcommand() else {
        return Err(CliError::Usage("a kind is required".to_owned()));
    };
    let kind = catalog::kinds_of(group)
        .into_iter()
        .find(|k| k.name == kind_name)
        .ok_or_else(|| CliError::Usage(format!("unknown kind {kind_name:?}")))?;
    let Some((verb, verb_matches)) = kind_matches.subcommand() else {
        return Err(CliError::Usage("a verb is required".to_owned()));
    };
    let context = Context {
        client: client(&config)?,
        config,
        format,
    };
    run_verb(&context, &kind, verb, verb_matches).await
}
