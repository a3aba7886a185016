//! A Krake controller embedded in an axum service, next to the service's
//! own routes.
//!
//! The service keeps an inventory of every Application: the controller puts
//! its finalizer `example.com/inventory` on each, adds it to the inventory,
//! and removes it when the application is deleted (its finalizer's turn
//! comes after the garbage collector's `cascade_deletion`). The service
//! answers `GET /inventory` from it and `GET /metrics` with the controller's
//! metrics.
//!
//! `cargo run -p krake-examples --example embedded_controller -- http://127.0.0.1:8080 127.0.0.1:3000`

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use krake_client::{Api, Client};
use krake_controller::Action;
use krake_controller::controller::{Controller, ControllerConfig};
use krake_controller::finalizer::{Event, FinalizerError, finalizer};
use krake_controller::metrics::Metrics;
use krake_controller::shared::Reflectors;
use krake_controller::work_queue::Attempt;
use krake_data::kinds::kubernetes::Application;
use tokio_util::sync::CancellationToken;

/// The controller's finalizer.
pub const FINALIZER: &str = "example.com/inventory";

/// `namespace/name` of every application the controller saw alive.
#[derive(Debug, Default)]
pub struct Inventory(Mutex<BTreeSet<String>>);

impl Inventory {
    fn update(&self, f: impl FnOnce(&mut BTreeSet<String>)) {
        if let Ok(mut names) = self.0.lock() {
            f(&mut names);
        }
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }
}

struct Context {
    client: Client,
    inventory: Arc<Inventory>,
}

async fn reconcile(
    app: Arc<Application>,
    context: Arc<Context>,
) -> Result<Action, FinalizerError<Infallible>> {
    let namespace = app.metadata.namespace.clone().unwrap_or_default();
    let key = format!("{namespace}/{}", app.metadata.name);
    let api: Api<Application> = Api::namespaced(context.client.clone(), &namespace);
    let inventory = context.inventory.clone();
    finalizer(&api, FINALIZER, app, |event| async move {
        match event {
            Event::Apply(_) => inventory.update(|names| {
                names.insert(key);
            }),
            Event::Cleanup(_) => inventory.update(|names| {
                names.remove(&key);
            }),
        }
        Ok(Action::await_change())
    })
    .await
}

/// After a failure: the queue's exponential backoff (no delay of our own).
fn error_policy(
    _app: Arc<Application>,
    _error: &FinalizerError<Infallible>,
    _attempt: Attempt,
    _context: Arc<Context>,
) -> Action {
    Action::await_change()
}

/// The service: its own route and the controller's metrics, and the
/// controller's task (which ends when `shutdown` is cancelled).
pub fn service(
    client: Client,
    shutdown: CancellationToken,
) -> (Router, Arc<Inventory>, tokio::task::JoinHandle<()>) {
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let metrics = Metrics::new();
    let inventory = Arc::new(Inventory::default());
    let controller = Controller::<Application>::new(&reflectors, None)
        .config(ControllerConfig::new("inventory"))
        .metrics(metrics.clone());
    let context = Arc::new(Context {
        client,
        inventory: inventory.clone(),
    });
    let task = tokio::spawn(controller.run(reconcile, error_policy, context, shutdown));
    let router = Router::new()
        .route("/inventory", get(list))
        .with_state(inventory.clone())
        .merge(metrics.router());
    (router, inventory, task)
}

async fn list(State(inventory): State<Arc<Inventory>>) -> Json<Vec<String>> {
    Json(inventory.names())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let api = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let client = match Client::new(&api) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("embedded_controller: {err}");
            std::process::exit(1);
        }
    };
    let shutdown = CancellationToken::new();
    let (router, _, controller) = service(client, shutdown.clone());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("embedded_controller: cannot listen on {listen}: {err}");
            std::process::exit(1);
        }
    };
    let stop = shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await;
    let _ = controller.await;
    if let Err(err) = served {
        eprintln!("embedded_controller: {err}");
        std::process::exit(1);
    }
}
