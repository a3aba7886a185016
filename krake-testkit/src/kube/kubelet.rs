//! The simulated kubelet and controllers: what makes workloads look as if
//! they ran. When [automatic](Kubelet::set_automatic) (the default), a
//! task wakes on every change and, within a few milliseconds, brings
//! workload status, Pods and LoadBalancer addresses to what a healthy
//! cluster would show. Every write it makes is an ordinary write of the
//! fake (resourceVersion bumped, watchers see `MODIFIED`), done as the
//! managers `kube-controller-manager` and `kubelet`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::objects::{self, Write, random_suffix};
use super::registry::ResourceType;
use super::storage::{Store, StoreInner};

const CONTROLLERS: &str = "kube-controller-manager";
const KUBELET: &str = "kubelet";

/// The simulated kubelet (and workload controllers) of a
/// [`FakeCluster`](super::FakeCluster).
#[derive(Debug)]
pub struct Kubelet {
    store: Arc<Store>,
    automatic: AtomicBool,
    wake: Notify,
    /// Ready counts a test pinned: (storage key, namespace, name) → ready.
    ready_overrides: Mutex<HashMap<(String, String, String), u64>>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta<'v>(object: &'v Value, field: &str) -> &'v str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Conditions with the timestamps of `old` kept where nothing changed, so
/// that a reconciliation that changes nothing writes nothing.
fn keep_times(old: Option<&Value>, mut new: Vec<Value>) -> Value {
    let olds: Vec<Value> = old.and_then(Value::as_array).cloned().unwrap_or_default();
    for c in new.iter_mut() {
        if let Some(o) = olds
            .iter()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
        {
            for t in ["lastTransitionTime", "lastUpdateTime", "lastProbeTime"] {
                if let Some(v) = o.get(t) {
                    c[t] = v.clone();
                }
            }
        }
    }
    Value::Array(new)
}

impl Kubelet {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            automatic: AtomicBool::new(true),
            wake: Notify::new(),
            ready_overrides: Mutex::new(HashMap::new()),
        }
    }

    /// Turns the automatic kubelet on (the default) or off. Off, nothing
    /// changes status by itself; the manual methods still work.
    pub fn set_automatic(&self, automatic: bool) {
        self.automatic.store(automatic, Ordering::SeqCst);
        if automatic {
            self.wake.notify_one();
        }
    }

    /// Is the kubelet automatic?
    pub fn is_automatic(&self) -> bool {
        self.automatic.load(Ordering::SeqCst)
    }

    /// Pins the ready count of a Deployment, StatefulSet or ReplicaSet
    /// (`status.readyReplicas` and `availableReplicas`) or a DaemonSet
    /// (`status.numberReady` and `numberAvailable`), and writes it now. The
    /// automatic kubelet keeps it until [`clear_ready_replicas`](Self::clear_ready_replicas).
    /// Returns `false` when the object does not exist.
    pub fn set_ready_replicas(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        ready: u64,
    ) -> bool {
        let mut st = self.store.lock();
        let Some(rt) = st.registry.by_kind(api_version, kind) else {
            return false;
        };
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        self.overrides().insert(
            (rt.key.to_string(), ns.to_string(), name.to_string()),
            ready,
        );
        let Some(obj) = st.get(&rt.key, ns, name) else {
            return false;
        };
        let mut status = obj.get("status").cloned().unwrap_or(json!({}));
        if kind == "DaemonSet" {
            status["numberReady"] = json!(ready);
            status["numberAvailable"] = json!(ready);
        } else {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        write_status(&mut st, &rt, &obj, status, CONTROLLERS);
        true
    }

    /// Forgets a ready count pinned by [`set_ready_replicas`](Self::set_ready_replicas).
    pub fn clear_ready_replicas(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let Some(rt) = self.store.lock().registry.by_kind(api_version, kind) else {
            return;
        };
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        self.overrides()
            .remove(&(rt.key.to_string(), ns.to_string(), name.to_string()));
        self.wake.notify_one();
    }

    /// Sets a Pod's `status.phase` (and its containers' readiness: ready
    /// only when `Running`). With the automatic kubelet on, a bare Pod set to
    /// `Pending` becomes `Running` again; turn it off first.
    pub fn set_pod_phase(&self, namespace: &str, name: &str, phase: &str) -> bool {
        let mut st = self.store.lock();
        let Some(rt) = st.registry.by_kind("v1", "Pod") else {
            return false;
        };
        let Some(pod) = st.get(&rt.key, namespace, name) else {
            return false;
        };
        let status = pod_status(&pod, phase);
        write_status(&mut st, &rt, &pod, status, KUBELET);
        true
    }

    fn overrides(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), u64>> {
        self.ready_overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The automatic loop: wakes on changes, waits a little for more, then
    /// reconciles everything.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut events = self.store.lock().subscribe_all();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = events.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = r {
                        return;
                    }
                }
                _ = self.wake.notified() => {}
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = events.try_recv() {}
            if self.is_automatic() {
                self.reconcile();
            }
        }
    }

    /// One pass over everything.
    pub(crate) fn reconcile(&self) {
        let mut st = self.store.lock();
        let registry = st.registry.clone();
        let node_names: Vec<String> = registry
            .by_kind("v1", "Node")
            .map(|rt| {
                st.list(&rt.key, None)
                    .iter()
                    .map(|n| meta(n, "name").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let overrides = self.overrides().clone();
        for kind in ["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"] {
            let Some(rt) = registry.by_kind("apps/v1", kind) else {
                continue;
            };
            for obj in st.list(&rt.key, None) {
                if obj.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let ns = meta(&obj, "namespace").to_string();
                let key = (
                    rt.key.to_string(),
                    ns.clone(),
                    meta(&obj, "name").to_string(),
                );
                let desired = if kind == "DaemonSet" {
                    node_names.len() as u64
                } else {
                    obj.pointer("/spec/replicas")
                        .and_then(Value::as_u64)
                        .unwrap_or(1)
                };
                let ready = overrides.get(&key).copied().unwrap_or(desired).min(desired);
                sync_pods(&mut st, &obj, kind, desired, &node_names);
                let status = workload_status(&obj, kind, desired, ready);
                if obj.get("status") != Some(&status) {
                    write_status(&mut st, &rt, &obj, status, CONTROLLERS);
                }
            }
        }
        if let Some(rt) = registry.by_kind("batch/v1", "Job") {
            for job in st.list(&rt.key, None) {
                let completions = job
                    .pointer("/spec/completions")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                let old = job.get("status").cloned().unwrap_or(json!({}));
                let mut status = old.clone();
                status["succeeded"] = json!(completions);
                status["active"] = json!(0);
                status["ready"] = json!(0);
                if status.get("startTime").is_none() {
                    status["startTime"] = json!(now());
                }
                if status.get("completionTime").is_none() {
                    status["completionTime"] = json!(now());
                }
                let t = now();
                status["conditions"] = keep_times(
                    old.get("conditions"),
                    vec![
                        json!({"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                            "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t}),
                        json!({"type": "Complete", "status": "True", "reason": "CompletionsReached",
                            "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t}),
                    ],
                );
                if status != old {
                    write_status(&mut st, &rt, &job, status, CONTROLLERS);
                }
            }
        }
        if let Some(rt) = registry.by_kind("v1", "Pod") {
            for pod in st.list(&rt.key, None) {
                let phase = pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Pending");
                if phase == "Pending" && pod.pointer("/metadata/deletionTimestamp").is_none() {
                    let status = pod_status(&pod, "Running");
                    write_status(&mut st, &rt, &pod, status, KUBELET);
                }
            }
        }
        if let Some(rt) = registry.by_kind("v1", "Service") {
            for svc in st.list(&rt.key, None) {
                let lb = svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
                if lb && svc.pointer("/status/loadBalancer/ingress/0").is_none() {
                    let n = svc
                        .pointer("/spec/clusterIP")
                        .and_then(Value::as_str)
                        .and_then(|ip| ip.rsplit('.').next())
                        .and_then(|x| x.parse::<u8>().ok())
                        .unwrap_or(1);
                    let status = json!({"loadBalancer": {"ingress": [{"ip": format!("172.18.255.{n}"), "ipMode": "VIP"}]}});
                    write_status(&mut st, &rt, &svc, status, "service-controller");
                }
            }
        }
    }
}

/// Writes an object's status as the `/status` subresource would.
fn write_status(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    obj: &Value,
    status: Value,
    manager: &str,
) {
    let mut new = obj.clone();
    new["status"] = status;
    let ns = meta(obj, "namespace");
    let ns = if ns.is_empty() { None } else { Some(ns) };
    let w = Write {
        manager,
        subresource: Some("status"),
        dry_run: false,
    };
    if let Err(e) = objects::replace(st, rt, ns, meta(obj, "name"), new, w) {
        tracing::debug!(error = %e, "fake kubelet: status write failed");
    }
}

fn workload_status(obj: &Value, kind: &str, desired: u64, ready: u64) -> Value {
    let generation = obj
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let old = obj.get("status");
    let mut status = match kind {
        "DaemonSet" => json!({
            "currentNumberScheduled": desired,
            "desiredNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "updatedNumberScheduled": desired,
            "observedGeneration": generation,
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation,
            "replicas": desired,
            "readyReplicas": ready,
            "currentReplicas": desired,
            "updatedReplicas": desired,
            "availableReplicas": ready,
            "collisionCount": 0,
        }),
        "ReplicaSet" => json!({
            "replicas": desired,
            "fullyLabeledReplicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": generation,
        }),
        _ => json!({
            "observedGeneration": generation,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }),
    };
    if kind == "DaemonSet" && desired > ready {
        status["numberUnavailable"] = json!(desired - ready);
    }
    if kind == "Deployment" {
        if desired > ready {
            status["unavailableReplicas"] = json!(desired - ready);
        }
        let t = now();
        let available = if ready >= desired {
            json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.", "lastUpdateTime": t, "lastTransitionTime": t})
        } else {
            json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.", "lastUpdateTime": t, "lastTransitionTime": t})
        };
        let name = meta(obj, "name");
        let progressing = json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
            "message": format!("ReplicaSet \"{name}\" has successfully progressed."), "lastUpdateTime": t, "lastTransitionTime": t});
        status["conditions"] = keep_times(
            old.and_then(|s| s.get("conditions")),
            vec![available, progressing],
        );
    }
    status
}

/// A Pod's status in a phase, its containers ready when `Running`.
fn pod_status(pod: &Value, phase: &str) -> Value {
    let running = phase == "Running";
    let t = now();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = if running {
                        json!({"running": {"startedAt": t}})
                    } else {
                        json!({"waiting": {"reason": "ContainerCreating"}})
                    };
                    json!({
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                        "ready": running,
                        "started": running,
                        "restartCount": 0,
                        "state": state,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let flag = if running { "True" } else { "False" };
    json!({
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": t},
            {"type": "Ready", "status": flag, "lastTransitionTime": t},
        ],
        "hostIP": "10.0.0.1",
        "podIP": format!("10.244.0.{}", 2 + (uuid::Uuid::new_v4().as_u128() % 250) as u8),
        "startTime": t,
        "containerStatuses": containers,
    })
}

/// Brings the Pods a workload owns to `desired`.
fn sync_pods(st: &mut StoreInner, owner: &Value, kind: &str, desired: u64, nodes: &[String]) {
    let Some(rt) = st.registry.by_kind("v1", "Pod") else {
        return;
    };
    let ns = meta(owner, "namespace").to_string();
    let uid = meta(owner, "uid").to_string();
    let name = meta(owner, "name").to_string();
    let owned: Vec<Arc<Value>> = st
        .list(&rt.key, Some(&ns))
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
        })
        .collect();
    let have = owned.len() as u64;
    for pod in owned.iter().skip(desired as usize) {
        let _ = objects::delete(st, &rt, Some(&ns), meta(pod, "name"), None, None, false);
    }
    let Some(template) = owner.pointer("/spec/template") else {
        return;
    };
    for i in have..desired {
        let pod_name = if kind == "StatefulSet" {
            format!("{name}-{i}")
        } else {
            format!("{name}-{}", random_suffix(5))
        };
        let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
        if let Some(node) = nodes.get(i as usize % nodes.len().max(1)) {
            spec["nodeName"] = json!(node);
        }
        let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
        metadata["name"] = json!(pod_name);
        metadata["namespace"] = json!(ns);
        metadata["ownerReferences"] = json!([{
            "apiVersion": owner["apiVersion"], "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        }]);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
        match objects::create(st, &rt, Some(&ns), pod, Write::by(CONTROLLERS)) {
            Ok(created) => {
                let status = pod_status(&created, "Running");
                write_status(st, &rt, &created, status, KUBELET);
            }
            Err(e) => tracing::debug!(error = %e, "fake kubelet: pod create failed"),
        }
    }
}
