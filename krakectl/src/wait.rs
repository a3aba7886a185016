//! `--wait`: follow an object's state with a spinner until it reaches the
//! wanted one (or disappears, for `deleted`), then show the final state.

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use krake_client::{DynamicApi, WatchConfig, WatchEvent};
use serde_json::Value;

use crate::error::CliError;
use crate::output::current_state;

/// How long `--wait` waits at most (Krake's blocking requests: about 60 s).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

fn reached(object: &Value, wanted: &str) -> bool {
    current_state(object).is_some_and(|s| s.eq_ignore_ascii_case(wanted))
}

/// Waits until `name` reaches `wanted`; answers its latest version (with
/// `status.state = DELETED` once it is gone, when `wanted` is `deleted`).
pub async fn wait_for(
    api: &DynamicApi,
    name: &str,
    wanted: &str,
    mut latest: Value,
    timeout: Duration,
) -> Result<Value, CliError> {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let show = |object: &Value| {
        spinner.set_message(format!(
            "{name}: {} (waiting for {})",
            current_state(object).unwrap_or("?"),
            wanted.to_ascii_uppercase()
        ));
    };
    show(&latest);
    let deleted = wanted.eq_ignore_ascii_case("deleted");
    let mut gone = false;
    if !reached(&latest, wanted) {
        let mut events = std::pin::pin!(api.watch(WatchConfig::default()));
        let follow = async {
            while let Some(event) = events.next().await {
                let event = event?;
                let mut seen = false;
                match event {
                    WatchEvent::Restarted(all) => {
                        match all.into_iter().find(|o| name_of(o) == Some(name)) {
                            Some(object) => latest = object,
                            None if deleted => gone = true,
                            None => {}
                        }
                        seen = true;
                    }
                    WatchEvent::Added(object) | WatchEvent::Modified(object)
                        if name_of(&object) == Some(name) =>
                    {
                        latest = object;
                        seen = true;
                    }
                    WatchEvent::Deleted(object) if name_of(&object) == Some(name) => {
                        latest = object;
                        gone = true;
                        seen = true;
                    }
                    _ => {}
                }
                if seen {
                    show(&latest);
                }
                if (deleted && gone) || reached(&latest, wanted) {
                    break;
                }
            }
            Ok::<(), krake_client::Error>(())
        };
        match tokio::time::timeout(timeout, follow).await {
            Ok(result) => result?,
            Err(_) => {
                spinner.finish_and_clear();
                eprintln!(
                    "{name}: still {} after {}s, not {}",
                    current_state(&latest).unwrap_or("?"),
                    timeout.as_secs(),
                    wanted.to_ascii_uppercase()
                );
                return Ok(latest);
            }
        }
    }
    if gone {
        if let Some(status) = latest.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("state".to_owned(), Value::from("DELETED"));
        }
    }
    spinner.finish_and_clear();
    eprintln!("{name}: {}", current_state(&latest).unwrap_or("?"));
    Ok(latest)
}
