//! A fake [Infrastructure Manager](https://imdocs.readthedocs.io/) (IM)
//! speaking IM's REST API over HTTP on loopback, for the infrastructure
//! controller's tests: IM creates Kubernetes clusters on OpenStack clouds,
//! neither of which can run here.
//!
//! [`ImFake::start`] serves plain HTTP on `127.0.0.1:<free port>`;
//! [`ImFake::url`] is what an InfrastructureProvider's `im.url` points at.
//!
//! Written from IM's documentation, not from what a controller sends:
//!
//! - the REST API page, <https://imdocs.readthedocs.io/en/latest/REST.html>
//!   (resources, methods, `async`, content types, the `Accept` header, error
//!   bodies), with the behaviour of IM's own REST front (`IM/REST.py` in
//!   <https://github.com/grycap/im>) where the page is silent (error
//!   messages, the `InfID` header, the aggregation of VM states);
//! - the "Authorization File" section,
//!   <https://imdocs.readthedocs.io/en/latest/client.html#authorization-file>
//!   (`key = value` pairs separated by `;`, the `InfrastructureManager` and
//!   `OpenStack` types, OpenStack's `domain`, `tenant` and `auth_version`
//!   keys);
//! - the list of states, "IM valid States" on
//!   <https://imdocs.readthedocs.io/en/latest/xmlrpc.html>.
//!
//! # What it emulates
//!
//! - `Authorization`: the content of an authorization file on one line,
//!   lines separated by the literal two characters `\n` (and `\\n` for a
//!   newline inside a value), or `Basic`/`Bearer` for IM credentials alone
//!   ([`AuthData::parse`]). A missing or unparsable header is
//!   `401 No authentication data provided`; a `type = InfrastructureManager`
//!   line whose `username`/`password` (or `token`) differ from
//!   [`ImConfig`]'s is `401` with `Invalid InfrastructureManager
//!   credentials` (the REST page: "If the content cannot be parsed
//!   successfully, or the user and password are not valid, it is returned
//!   the HTTP error code 401"). Every request's auth data is recorded
//!   ([`ImFake::requests`]), so a test sees e.g. the OpenStack `domain` that
//!   reached IM. An infrastructure belongs to the IM user that created it:
//!   another user gets IM's `403 Access to this infrastructure not
//!   granted.` for it and does not see it in the list.
//! - `POST /infrastructures` with a TOSCA body (`Content-Type: text/yaml`,
//!   `text/x-yaml` or `application/yaml`), `async` (`yes`/`true`/`1`,
//!   `no`/`false`/`0`, anything else `400 Incorrect value in async
//!   parameter`): `200` with the infrastructure's URI as `text/uri-list`
//!   (or `{"uri": ...}` for `Accept: application/json`) and an `InfID`
//!   header. Asynchronous: answered at once, the infrastructure starts
//!   `pending`. Synchronous: answered once the VMs exist (after the
//!   pending phase), as IM waits for the VMs to be created (not
//!   configured). Then `running` (contextualization) and `configured`, with
//!   [`Durations`] per phase.
//! - `GET /infrastructures/{id}/state`: `{"state": {"state": s,
//!   "vm_states": {"0": s, ...}}}`, the aggregate computed as IM's
//!   `GetInfrastructureState` does (a `failed` or `unknown` VM decides,
//!   then `pending`, `running`, `stopped`, `off`, `configured`, and an
//!   `unconfigured` VM makes a configured infrastructure `unconfigured`;
//!   `deleting` while it is being deleted).
//! - `GET /infrastructures/{id}/outputs`: `{"outputs": {...}}`, one entry
//!   per output the template declares (`topology_template.outputs`), its
//!   value the one the test configured ([`ImConfig::outputs`],
//!   [`ImFake::set_output`], [`ImFake::set_kubeconfig`]) or `null`; every
//!   value is `null` until the infrastructure was first configured (the
//!   attributes outputs read come from contextualization).
//!   `GET /infrastructures/{id}/tosca`: the last template.
//! - `POST /infrastructures/{id}` with a TOSCA body: the new template
//!   replaces the last one, VMs are added or removed to match its counts
//!   (answer: the URIs of the new VMs, `text/uri-list`), and the
//!   infrastructure goes through `running` (new VMs `pending` first) back to
//!   `configured`. `context` is validated as IM does.
//! - `PUT /infrastructures/{id}/reconfigure`: `200` with an empty
//!   `text/plain` body; contextualization runs again (`running`, then
//!   `configured`), which ends a (forced) `unconfigured` state; `failed`,
//!   `stopped`, `off` and `unknown` VMs stay so, as contextualization does
//!   not repair a VM.
//! - `DELETE /infrastructures/{id}` (`async`, `force` validated): `200`
//!   with an empty body. Asynchronous: `deleting` for
//!   [`Durations::deleting`], then the infrastructure is gone; synchronous:
//!   answered when it is gone. A deleted infrastructure answers `404` with
//!   IM's `Deleted infrastructure.`, an unknown id `404` with `Invalid
//!   infrastructure ID or access not granted.`.
//! - `GET /infrastructures`: the URIs of the user's infrastructures
//!   (`text/uri-list`, one a line, or `{"uri-list": [{"uri": ...}]}`);
//!   `GET /infrastructures/{id}`: the URIs of its VMs.
//! - Errors as IM's `return_error`: `text/plain` by default,
//!   `{"message": ..., "code": ...}` for `Accept: application/json`, IM's
//!   HTML page for `text/html`; an `Accept` that allows none of an answer's
//!   types is `415 Unsupported Accept Media Types: ...`; a body of another
//!   type is `415 Unsupported Media Type ...`.
//! - A template the fake cannot take (not YAML, not a mapping, no
//!   `tosca_definitions_version`, a `scalable` count that is not a number)
//!   or that a test refuses ([`ImFaults::refuse_templates`]) is `400` with
//!   `Error Creating Inf.: <message>` (`Error Adding resources: ...` on
//!   update).
//! - The cloud: when [`ImConfig::openstack`] is set, an infrastructure
//!   created without an OpenStack line matching it (host, username,
//!   password, tenant, domain, the latter `Default` when absent as in IM)
//!   gets `failed` VMs after the pending phase, as when OpenStack refuses
//!   IM's credentials.
//!
//! Faults ([`ImFaults`]): `5xx` for the next N requests or until cleared,
//! slow answers, refused templates; per infrastructure
//! ([`ImFake::force_state`], [`ImFake::force_vm_state`],
//! [`ImFake::vanish`]): `unconfigured`, `failed` or any other state, or gone
//! from IM altogether (`404`). Every request is recorded with its status
//! ([`ImFake::requests`], [`ImFake::count`]).
//!
//! # Time
//!
//! States follow the clock lazily: nothing runs in the background, a state
//! is computed from the time the last operation started
//! (`tokio::time::Instant`) whenever it is read. Paused tokio time
//! (`tokio::time::pause`, `advance`) therefore moves infrastructures along
//! too.
//!
//! # What it does not emulate
//!
//! - RADL (plain or JSON bodies are `400`), TOSCA beyond the counts and
//!   outputs above (no type checking, no imports, no `removal_list`: scaling
//!   down removes the last VMs), node templates of other kinds.
//! - VM-level operations (`/vms/...`: info, alter, start, stop, reboot,
//!   remove, snapshots), infrastructure `start`/`stop`, import/export
//!   (`PUT /infrastructures`, `data`), `authorization` changes, `dry_run`,
//!   `filter`, `/clouds`, `/stats`, `/version`, OAI-PMH.
//! - Contextualization logs (`contmsg`) and the `radl` property: `400`.
//! - Vault or OIDC tokens checked against an issuer: a token is compared to
//!   [`ImConfig::token`]; credentials other than the IM and OpenStack lines
//!   are recorded and ignored. TLS: the fake is plain HTTP.
//! - `409` for an operation on an infrastructure in a state that refuses
//!   it: every operation is accepted while the infrastructure exists.

mod auth;
mod server;
mod tosca;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use auth::{AuthData, LINE_SEPARATOR};
pub use tosca::Template;

/// The IM states ("IM valid States").
pub mod states {
    /// Launched, still initialising.
    pub const PENDING: &str = "pending";
    /// Created and running, still being configured.
    pub const RUNNING: &str = "running";
    /// Running and contextualized.
    pub const CONFIGURED: &str = "configured";
    /// Running but not correctly contextualized.
    pub const UNCONFIGURED: &str = "unconfigured";
    /// Stopped or suspended.
    pub const STOPPED: &str = "stopped";
    /// Shut down or removed from the infrastructure.
    pub const OFF: &str = "off";
    /// An error happened while launching.
    pub const FAILED: &str = "failed";
    /// Unable to obtain the state.
    pub const UNKNOWN: &str = "unknown";
    /// Being deleted.
    pub const DELETING: &str = "deleting";
}

/// Why an [`ImFake`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ImFakeError {
    /// Binding the listening socket failed.
    #[error("fake IM could not listen on loopback: {0}")]
    Bind(#[from] std::io::Error),
}

/// How long each phase of an infrastructure lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    /// `pending`: the VMs are being created (also new VMs of an update).
    pub pending: Duration,
    /// `running`: contextualization (after creation, update, reconfigure).
    pub configuring: Duration,
    /// `deleting`: the VMs are being destroyed.
    pub deleting: Duration,
}

impl Default for Durations {
    /// 100 ms each.
    fn default() -> Self {
        Durations {
            pending: Duration::from_millis(100),
            configuring: Duration::from_millis(100),
            deleting: Duration::from_millis(100),
        }
    }
}

/// The OpenStack credentials the fake cloud accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStackCredentials {
    /// `host`: the Keystone URL.
    pub host: String,
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
    /// `tenant`: the project.
    pub tenant: String,
    /// `domain` (IM's default is `Default`).
    pub domain: String,
}

impl OpenStackCredentials {
    fn matches(&self, line: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| line.get(k).map(String::as_str);
        get("host") == Some(&self.host)
            && get("username") == Some(&self.username)
            && get("password") == Some(&self.password)
            && get("tenant") == Some(&self.tenant)
            && get("domain").unwrap_or("Default") == self.domain
    }
}

/// How a fake IM is set up.
#[derive(Debug, Clone)]
pub struct ImConfig {
    /// The IM user name accepted (with [`password`](Self::password)).
    pub username: String,
    /// The IM password accepted.
    pub password: String,
    /// An IM token accepted instead of username and password, if any.
    pub token: Option<String>,
    /// The OpenStack credentials the cloud accepts; `None`: any (or none).
    pub openstack: Option<OpenStackCredentials>,
    /// How long each phase lasts.
    pub durations: Durations,
    /// Output values by name, for every infrastructure whose template
    /// declares them (see [`ImFake::set_kubeconfig`]).
    pub outputs: BTreeMap<String, Value>,
}

impl Default for ImConfig {
    /// User `krake`, password `krake-im-password`, no token, any cloud,
    /// default durations, no outputs.
    fn default() -> Self {
        ImConfig {
            username: "krake".into(),
            password: "krake-im-password".into(),
            token: None,
            openstack: None,
            durations: Durations::default(),
            outputs: BTreeMap::new(),
        }
    }
}

/// What a request asked for, by method and kind of path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// `GET /infrastructures`.
    List,
    /// `POST /infrastructures`.
    Create,
    /// `GET /infrastructures/{id}` (its VMs).
    Info,
    /// `POST /infrastructures/{id}` (add or remove resources).
    Update,
    /// `DELETE /infrastructures/{id}`.
    Delete,
    /// `GET /infrastructures/{id}/state`.
    State,
    /// `GET /infrastructures/{id}/outputs`.
    Outputs,
    /// `GET /infrastructures/{id}/{other property}`.
    Property,
    /// `PUT /infrastructures/{id}/reconfigure`.
    Reconfigure,
    /// Anything else.
    Other,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct ImRequest {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string (empty when none).
    pub query: String,
    /// What it asked for.
    pub kind: RequestKind,
    /// The infrastructure id in the path, if any.
    pub infrastructure: Option<String>,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The header parsed, when it parses.
    pub auth: Option<AuthData>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

/// Faults to inject into a running fake IM; every setting applies to new
/// requests at once.
#[derive(Debug, Default)]
pub struct ImFaults {
    inner: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    fail_next: (u32, u16),
    fail: Option<u16>,
    slow: Option<Duration>,
    refuse: Option<String>,
}

impl ImFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` requests are answered with `status` (503, 500, 502...)
    /// before anything else is looked at.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().fail_next = (n, status);
    }

    /// Every request is answered with this status; `None` ends it.
    pub fn fail_requests(&self, status: Option<u16>) {
        self.lock().fail = status;
    }

    /// Every answer is delayed by this long; `None` ends it.
    pub fn slow(&self, delay: Option<Duration>) {
        self.lock().slow = delay;
    }

    /// Templates posted from now on (create and update) are refused with
    /// `400` and this message; `None` ends it.
    pub fn refuse_templates(&self, message: Option<&str>) {
        self.lock().refuse = message.map(str::to_string);
    }

    /// Ends every fault.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    fn failure(&self) -> Option<u16> {
        let mut f = self.lock();
        if f.fail_next.0 > 0 {
            f.fail_next.0 -= 1;
            return Some(f.fail_next.1);
        }
        f.fail
    }

    fn delay(&self) -> Option<Duration> {
        self.lock().slow
    }

    fn refusal(&self) -> Option<String> {
        self.lock().refuse.clone()
    }
}

/// An infrastructure as a test sees it ([`ImFake::infrastructures`]).
#[derive(Debug, Clone)]
pub struct Infrastructure {
    /// IM's id (a UUID).
    pub id: String,
    /// The aggregated state now.
    pub state: String,
    /// The state of each VM by id.
    pub vm_states: BTreeMap<String, String>,
    /// The last template (create or update).
    pub template: Template,
    /// How many templates it received (1 + updates).
    pub templates: usize,
    /// How many reconfigures it received.
    pub reconfigures: usize,
    /// The outputs IM would answer now.
    pub outputs: serde_json::Map<String, Value>,
    /// The auth data of the request that created it.
    pub auth: AuthData,
    /// Deleted (IM answers 404 `Deleted infrastructure.`).
    pub deleted: bool,
}

impl Infrastructure {
    /// The instances of a node template (see [`Template::counts`]).
    pub fn count(&self, node: &str) -> Option<u64> {
        self.template.counts.get(node).copied()
    }
}

/// What is happening to an infrastructure since `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created: pending, running, configured.
    Creating,
    /// Updated: new VMs pending, then all running, then configured.
    Updating {
        /// The VMs it had before.
        old_vms: usize,
    },
    /// Reconfigured: running, then configured.
    Reconfiguring,
}

#[derive(Debug)]
struct Infra {
    id: String,
    owner: String,
    auth: AuthData,
    template: Template,
    templates: usize,
    reconfigures: usize,
    vms: usize,
    phase: Phase,
    since: Instant,
    /// The cloud refused the credentials: VMs fail after pending.
    cloud_refused: bool,
    /// Reached `configured` once.
    configured_once: bool,
    forced: Option<String>,
    forced_vms: BTreeMap<String, String>,
    outputs: BTreeMap<String, Value>,
    /// Deleting since, if being deleted.
    deleting: Option<Instant>,
    deleted: bool,
}

impl Infra {
    /// The natural state of VM `index` now.
    fn vm_state(&self, index: usize, now: Instant, d: &Durations) -> &'static str {
        let e = now.saturating_duration_since(self.since);
        match self.phase {
            Phase::Creating if self.cloud_refused => {
                if e < d.pending {
                    states::PENDING
                } else {
                    states::FAILED
                }
            }
            Phase::Creating => {
                if e < d.pending {
                    states::PENDING
                } else if e < d.pending + d.configuring {
                    states::RUNNING
                } else {
                    states::CONFIGURED
                }
            }
            Phase::Updating { old_vms } => {
                if index >= old_vms && e < d.pending {
                    states::PENDING
                } else if e < d.pending + d.configuring {
                    states::RUNNING
                } else {
                    states::CONFIGURED
                }
            }
            Phase::Reconfiguring => {
                if e < d.configuring {
                    states::RUNNING
                } else {
                    states::CONFIGURED
                }
            }
        }
    }

    /// Moves the clock-driven parts along: deletion ends, `configured` is
    /// noted.
    fn tick(&mut self, now: Instant, d: &Durations) {
        if let Some(since) = self.deleting
            && now.saturating_duration_since(since) >= d.deleting
        {
            self.deleted = true;
        }
        if !self.configured_once && self.aggregate(now, d).0 == states::CONFIGURED {
            self.configured_once = true;
        }
    }

    fn vm_states(&self, now: Instant, d: &Durations) -> BTreeMap<String, String> {
        (0..self.vms)
            .map(|i| {
                let id = i.to_string();
                let state = self
                    .forced_vms
                    .get(&id)
                    .cloned()
                    .or_else(|| self.forced.clone())
                    .unwrap_or_else(|| self.vm_state(i, now, d).to_string());
                (id, state)
            })
            .collect()
    }

    /// The aggregated state and the VM states, as IM's
    /// `GetInfrastructureState` computes them.
    fn aggregate(&self, now: Instant, d: &Durations) -> (String, BTreeMap<String, String>) {
        let vm_states = self.vm_states(now, d);
        let mut state: Option<&str> = None;
        for i in 0..self.vms {
            let s = vm_states[&i.to_string()].as_str();
            match s {
                states::FAILED | states::UNKNOWN => {
                    state = Some(s);
                    break;
                }
                states::PENDING => state = Some(states::PENDING),
                states::RUNNING if state != Some(states::PENDING) => {
                    state = Some(states::RUNNING);
                }
                states::STOPPED | states::OFF | states::CONFIGURED if state.is_none() => {
                    state = Some(s);
                }
                states::UNCONFIGURED if state.is_none() || state == Some(states::CONFIGURED) => {
                    state = Some(states::UNCONFIGURED);
                }
                _ => {}
            }
        }
        let mut state = match state {
            Some(s) => s.to_string(),
            None if self.vms == 0 => self
                .forced
                .clone()
                .unwrap_or_else(|| self.vm_state(0, now, d).to_string()),
            None => states::UNKNOWN.to_string(),
        };
        if self.deleting.is_some() {
            state = states::DELETING.to_string();
        }
        (state, vm_states)
    }

    fn outputs(&self, global: &BTreeMap<String, Value>) -> serde_json::Map<String, Value> {
        self.template
            .outputs
            .iter()
            .map(|name| {
                let value = if self.configured_once {
                    self.outputs
                        .get(name)
                        .or_else(|| global.get(name))
                        .cloned()
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                (name.clone(), value)
            })
            .collect()
    }

    fn snapshot(
        &self,
        now: Instant,
        d: &Durations,
        global: &BTreeMap<String, Value>,
    ) -> Infrastructure {
        let (state, vm_states) = self.aggregate(now, d);
        Infrastructure {
            id: self.id.clone(),
            state,
            vm_states,
            template: self.template.clone(),
            templates: self.templates,
            reconfigures: self.reconfigures,
            outputs: self.outputs(global),
            auth: self.auth.clone(),
            deleted: self.deleted,
        }
    }
}

/// What the server and the handle share.
#[derive(Debug)]
struct Shared {
    config: ImConfig,
    state: Mutex<World>,
    faults: ImFaults,
    address: String,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct World {
    durations: Durations,
    outputs: BTreeMap<String, Value>,
    infras: BTreeMap<String, Infra>,
    /// Creation order of ids.
    order: Vec<String>,
    requests: Vec<ImRequest>,
}

impl World {
    fn tick(&mut self) {
        let now = Instant::now();
        let d = self.durations;
        for infra in self.infras.values_mut() {
            infra.tick(now, &d);
        }
    }
}

impl Shared {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.tick();
        w
    }
}

/// A running fake IM. Dropping it stops the server.
#[derive(Debug)]
pub struct ImFake {
    shared: Arc<Shared>,
}

impl Drop for ImFake {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl ImFake {
    /// Starts a fake IM on `127.0.0.1:<free port>`.
    pub async fn start(config: ImConfig) -> Result<ImFake, ImFakeError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(World {
                durations: config.durations,
                outputs: config.outputs.clone(),
                infras: BTreeMap::new(),
                order: Vec::new(),
                requests: Vec::new(),
            }),
            config,
            faults: ImFaults::default(),
            address,
            cancel: CancellationToken::new(),
        });
        tokio::spawn(server::serve(listener, shared.clone()));
        Ok(ImFake { shared })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    /// The configuration it started with.
    pub fn config(&self) -> &ImConfig {
        &self.shared.config
    }

    /// An `Authorization` header the fake accepts: its IM credentials and,
    /// if configured, its OpenStack credentials (`auth_version =
    /// 3.x_password`), joined by the literal `\n`.
    pub fn authorization(&self) -> String {
        let c = &self.shared.config;
        let mut lines = vec![format!(
            "id = im; type = InfrastructureManager; username = {}; password = {}",
            c.username, c.password
        )];
        if let Some(os) = &c.openstack {
            lines.push(format!(
                "id = ost; type = OpenStack; host = {}; username = {}; password = {}; tenant = {}; domain = {}; auth_version = 3.x_password",
                os.host, os.username, os.password, os.tenant, os.domain
            ));
        }
        lines.join(LINE_SEPARATOR)
    }

    /// The faults to inject.
    pub fn faults(&self) -> &ImFaults {
        &self.shared.faults
    }

    /// Sets how long each phase lasts, for operations started from now on
    /// (and the phases of running ones, which are measured lazily).
    pub fn set_durations(&self, durations: Durations) {
        self.shared.world().durations = durations;
    }

    /// Sets the `kubeconfig` output (a YAML string) of every
    /// infrastructure whose template declares it.
    pub fn set_kubeconfig(&self, yaml: &str) {
        self.set_output("kubeconfig", Value::String(yaml.to_string()));
    }

    /// Sets an output of every infrastructure whose template declares it.
    pub fn set_output(&self, name: &str, value: Value) {
        self.shared.world().outputs.insert(name.to_string(), value);
    }

    /// Sets an output of one infrastructure (over the fake-wide one);
    /// `false` when there is no such infrastructure.
    pub fn set_infrastructure_output(&self, id: &str, name: &str, value: Value) -> bool {
        let mut w = self.shared.world();
        let Some(infra) = w.infras.get_mut(id) else {
            return false;
        };
        infra.outputs.insert(name.to_string(), value);
        true
    }

    /// Forces every VM of an infrastructure into `state` (see [`states`]);
    /// `None` ends it. An `unconfigured` state ends with the next update
    /// or reconfigure; the others stay until cleared. `false` when there is
    /// no such infrastructure.
    pub fn force_state(&self, id: &str, state: Option<&str>) -> bool {
        let mut w = self.shared.world();
        let Some(infra) = w.infras.get_mut(id) else {
            return false;
        };
        infra.forced = state.map(str::to_string);
        true
    }

    /// Forces one VM into `state`; `None` ends it. Same lifetime as
    /// [`force_state`](Self::force_state).
    pub fn force_vm_state(&self, id: &str, vm: &str, state: Option<&str>) -> bool {
        let mut w = self.shared.world();
        let Some(infra) = w.infras.get_mut(id) else {
            return false;
        };
        match state {
            Some(s) => infra.forced_vms.insert(vm.to_string(), s.to_string()),
            None => infra.forced_vms.remove(vm),
        };
        true
    }

    /// Makes an infrastructure vanish from IM (as when IM lost its
    /// database): from now on `404 Invalid infrastructure ID or access not
    /// granted.`. `false` when there was no such infrastructure.
    pub fn vanish(&self, id: &str) -> bool {
        let mut w = self.shared.world();
        w.order.retain(|i| i != id);
        w.infras.remove(id).is_some()
    }

    /// Every infrastructure IM knows (deleted ones included), oldest first.
    pub fn infrastructures(&self) -> Vec<Infrastructure> {
        let w = self.shared.world();
        let now = Instant::now();
        w.order
            .iter()
            .filter_map(|id| w.infras.get(id))
            .map(|i| i.snapshot(now, &w.durations, &w.outputs))
            .collect()
    }

    /// One infrastructure.
    pub fn infrastructure(&self, id: &str) -> Option<Infrastructure> {
        let w = self.shared.world();
        w.infras
            .get(id)
            .map(|i| i.snapshot(Instant::now(), &w.durations, &w.outputs))
    }

    /// The infrastructures not deleted.
    pub fn live_infrastructures(&self) -> Vec<Infrastructure> {
        self.infrastructures()
            .into_iter()
            .filter(|i| !i.deleted)
            .collect()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<ImRequest> {
        self.shared.world().requests.clone()
    }

    /// How many requests it received.
    pub fn request_count(&self) -> usize {
        self.shared.world().requests.len()
    }

    /// How many requests of this kind it received (whatever the answer).
    pub fn count(&self, kind: RequestKind) -> usize {
        self.shared
            .world()
            .requests
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// Requests per kind.
    pub fn counts(&self) -> BTreeMap<RequestKind, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.shared.world().requests {
            *counts.entry(r.kind).or_insert(0) += 1;
        }
        counts
    }

    /// Forgets the recorded requests.
    pub fn reset_requests(&self) {
        self.shared.world().requests.clear();
    }
}
