//! An application's health from its live Kubernetes objects: the pod counts
//! and state of each workload ([`workload_health`]), their sum
//! ([`application_health`]), and the endpoints of its Services
//! ([`service_endpoint`]).
//!
//! Pure functions over raw Kubernetes JSON (camelCase, as the cluster
//! answers). Any JSON is accepted: a missing or mistyped field counts as
//! absent, a negative count as zero.
//!
//! # Where krake-rs differs from Krake
//!
//! Krake's rules (its `KubernetesApplicationObserver._set_container_health`)
//! are kept where they are sound and mended where they are not:
//!
//! * Pod: Krake looks at the first container only. Here a `CrashLoopBackOff`
//!   in any container makes the pod DEGRADED, a terminated container that
//!   will be restarted (policy `Always`, or `OnFailure` after a failure)
//!   RESTARTING, and the pod is COMPLETED only once every container has
//!   terminated for good (Krake calls an `OnFailure` pod that exited `0`
//!   RESTARTING). A pod without container statuses uses its phase
//!   (`Succeeded`/`Failed`: COMPLETED). Krake also counts a waiting pod as
//!   running; here a pod runs when its phase is `Running`, and a finished one
//!   counts as completed (all containers exited `0`) or failed.
//! * Deployment, StatefulSet, ReplicaSet: the desired count is `spec.replicas`
//!   (Krake: `status.replicas`, which includes pods of an old revision during
//!   a rollout), and DEGRADED means fewer ready replicas than desired: more
//!   ready than desired happens in every rolling update and scale-down.
//! * DaemonSet: Krake swaps the counters (desired = `currentNumberScheduled`,
//!   running = `desiredNumberScheduled`) and never sets a state; here desired
//!   is `desiredNumberScheduled`, running `numberReady`, DEGRADED when fewer
//!   are ready.
//! * Job: Krake counts running pods only for Jobs without `completions`, and
//!   keeps whatever state it had while a Job runs or after it failed; here
//!   running is always `status.active`, a Job with a `Failed` condition is
//!   DEGRADED, and a running one RUNNING.
//! * Several workloads: Krake lets the last resource it reads decide the
//!   application's state, so a crashing Deployment listed before a healthy one
//!   goes unnoticed; [`application_health`] lets the worst state win.
//! * Services: Krake takes the node port of the first port only and writes an
//!   IPv6 address unbracketed (which breaks `http://<host:port>/` URLs, as the
//!   shutdown hook builds); here the first port that has a node port counts,
//!   a LoadBalancer's hostname is used when it has no IP, and IPv6 addresses
//!   are bracketed.

use krake_data::kinds::kubernetes::{ApplicationState, ContainerHealth};
use serde_json::Value;

/// The health of one workload: its pod counts and the state it puts its
/// application in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceHealth {
    /// RUNNING, DEGRADED, RESTARTING or COMPLETED.
    pub state: ApplicationState,
    /// Desired, running, completed and failed pods of the workload.
    pub pods: ContainerHealth,
}

/// The health of a live workload (Pod, Deployment, StatefulSet, ReplicaSet,
/// DaemonSet or Job); `None` for other kinds and non-objects.
///
/// * Pod (one desired pod): a container waiting in `CrashLoopBackOff` makes it
///   DEGRADED; a terminated container that will restart (`restartPolicy`
///   `Always`, the default, or `OnFailure` with a non-zero exit code)
///   RESTARTING; every container terminated for good COMPLETED (one completed
///   pod if all exited `0`, else one failed pod); otherwise RUNNING, with one
///   running pod when its phase is `Running` (a pending pod is desired, not
///   running). Without container statuses, phase `Succeeded` or `Failed`
///   counts as terminated for good.
/// * Deployment, StatefulSet, ReplicaSet: desired `spec.replicas` (absent: 1),
///   running `status.readyReplicas` (absent: 0); DEGRADED when fewer are ready
///   than desired, else RUNNING.
/// * DaemonSet: desired `status.desiredNumberScheduled`, running
///   `status.numberReady`; DEGRADED when fewer are ready, else RUNNING.
/// * Job: desired `spec.completions` (absent: 1), running `status.active`,
///   completed `status.succeeded`, failed `status.failed`; COMPLETED when
///   enough pods succeeded (or the `Complete` condition is true), DEGRADED
///   when the `Failed` condition is true, else RUNNING.
pub fn workload_health(live: &Value) -> Option<ResourceHealth> {
    match live.get("kind")?.as_str()? {
        "Pod" => Some(pod_health(live)),
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            let desired = count(live.pointer("/spec/replicas")).unwrap_or(1);
            let ready = count(live.pointer("/status/readyReplicas")).unwrap_or(0);
            Some(replicated(desired, ready))
        }
        "DaemonSet" => {
            let desired = count(live.pointer("/status/desiredNumberScheduled")).unwrap_or(0);
            let ready = count(live.pointer("/status/numberReady")).unwrap_or(0);
            Some(replicated(desired, ready))
        }
        "Job" => Some(job_health(live)),
        _ => None,
    }
}

/// A non-negative integer count; `None` when absent or not a number.
fn count(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    value
        .as_i64()
        .or_else(|| value.as_u64().map(|_| i64::MAX))
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map(|f| f as i64)
        })
        .map(|n| n.max(0))
}

fn replicated(desired: i64, ready: i64) -> ResourceHealth {
    ResourceHealth {
        state: if ready < desired {
            ApplicationState::Degraded
        } else {
            ApplicationState::Running
        },
        pods: ContainerHealth {
            desired_pods: desired,
            running_pods: ready,
            ..ContainerHealth::default()
        },
    }
}

fn pod_health(pod: &Value) -> ResourceHealth {
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|statuses| statuses.iter().collect())
        .unwrap_or_default();
    let mut pods = ContainerHealth {
        desired_pods: 1,
        ..ContainerHealth::default()
    };

    let crash_looping = statuses.iter().any(|status| {
        status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            == Some("CrashLoopBackOff")
    });
    if crash_looping {
        return ResourceHealth {
            state: ApplicationState::Degraded,
            pods,
        };
    }

    // The exit code of each terminated container (`None`: not terminated).
    let exit_codes: Vec<Option<i64>> = statuses
        .iter()
        .map(|status| {
            let terminated = status.pointer("/state/terminated")?.as_object()?;
            Some(
                terminated
                    .get("exitCode")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            )
        })
        .collect();
    let restarts = |code: i64| match restart_policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    };
    if exit_codes.iter().flatten().any(|code| restarts(*code)) {
        return ResourceHealth {
            state: ApplicationState::Restarting,
            pods,
        };
    }

    let finished = if exit_codes.is_empty() {
        match phase {
            Some("Succeeded") => Some(true),
            Some("Failed") => Some(false),
            _ => None,
        }
    } else if exit_codes.iter().all(Option::is_some) {
        Some(exit_codes.iter().flatten().all(|code| *code == 0))
    } else {
        None
    };
    match finished {
        Some(succeeded) => {
            if succeeded {
                pods.completed_pods = 1;
            } else {
                pods.failed_pods = 1;
            }
            ResourceHealth {
                state: ApplicationState::Completed,
                pods,
            }
        }
        None => {
            if phase == Some("Running") {
                pods.running_pods = 1;
            }
            ResourceHealth {
                state: ApplicationState::Running,
                pods,
            }
        }
    }
}

fn job_health(job: &Value) -> ResourceHealth {
    let completions = count(job.pointer("/spec/completions")).unwrap_or(1);
    let succeeded = count(job.pointer("/status/succeeded")).unwrap_or(0);
    let condition = |kind: &str| {
        job.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|conditions| {
                conditions.iter().any(|condition| {
                    condition.get("type").and_then(Value::as_str) == Some(kind)
                        && condition.get("status").and_then(Value::as_str) == Some("True")
                })
            })
    };
    let state = if succeeded >= completions || condition("Complete") {
        ApplicationState::Completed
    } else if condition("Failed") {
        ApplicationState::Degraded
    } else {
        ApplicationState::Running
    };
    ResourceHealth {
        state,
        pods: ContainerHealth {
            desired_pods: completions,
            running_pods: count(job.pointer("/status/active")).unwrap_or(0),
            completed_pods: succeeded,
            failed_pods: count(job.pointer("/status/failed")).unwrap_or(0),
        },
    }
}

/// The health of an application from the health of its workloads: the pod
/// counts summed (saturating), and the state
///
/// * DEGRADED if any workload is DEGRADED,
/// * else RESTARTING if any is RESTARTING,
/// * else COMPLETED if every workload is COMPLETED,
/// * else RUNNING;
///
/// `None` without workloads (an application of ConfigMaps and Services only
/// keeps the state its controller gave it).
///
/// Krake overwrites the state with each resource it reads, so the last one
/// wins and the result depends on the manifest's order: a crashing Deployment
/// followed by a healthy one reads RUNNING. Letting the worst state win reports
/// every problem, whatever the order.
pub fn application_health(
    items: impl IntoIterator<Item = ResourceHealth>,
) -> (ContainerHealth, Option<ApplicationState>) {
    let mut total = ContainerHealth::default();
    let (mut any, mut degraded, mut restarting, mut all_completed) = (false, false, false, true);
    for item in items {
        any = true;
        total.desired_pods = total.desired_pods.saturating_add(item.pods.desired_pods);
        total.running_pods = total.running_pods.saturating_add(item.pods.running_pods);
        total.completed_pods = total
            .completed_pods
            .saturating_add(item.pods.completed_pods);
        total.failed_pods = total.failed_pods.saturating_add(item.pods.failed_pods);
        match item.state {
            ApplicationState::Degraded => degraded = true,
            ApplicationState::Restarting => restarting = true,
            _ => {}
        }
        all_completed &= item.state == ApplicationState::Completed;
    }
    let state = if !any {
        None
    } else if degraded {
        Some(ApplicationState::Degraded)
    } else if restarting {
        Some(ApplicationState::Restarting)
    } else if all_completed {
        Some(ApplicationState::Completed)
    } else {
        Some(ApplicationState::Running)
    };
    (total, state)
}

/// The endpoint of a live Service, as Krake records it in the application's
/// `status.services` under the Service's name; `None` if the Service has
/// none (then the entry is removed).
///
/// * `spec.type: LoadBalancer`: `<address>:<port>`, the address being the
///   first ingress's `ip` (else its `hostname`, else `<pending>` while the
///   load balancer has none), the port the first port's `port` (`<pending>`
///   without ports);
/// * otherwise (`NodePort`): `<api_host>:<nodePort>` of the first port that
///   has a node port, `api_host` being the host of the cluster's API URL.
///
/// IPv6 addresses are written in brackets (`[2001:db8::1]:80`).
pub fn service_endpoint(service: &Value, api_host: &str) -> Option<String> {
    let spec = service.get("spec")?;
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if spec.get("type").and_then(Value::as_str) == Some("LoadBalancer") {
        let ingress = service.pointer("/status/loadBalancer/ingress/0");
        let address = ["ip", "hostname"]
            .iter()
            .find_map(|key| {
                ingress
                    .and_then(|ingress| ingress.get(key))
                    .and_then(Value::as_str)
                    .filter(|address| !address.is_empty())
            })
            .unwrap_or("<pending>");
        let port = ports
            .first()
            .and_then(|port| count(port.get("port")))
            .map_or_else(|| "<pending>".to_owned(), |port| port.to_string());
        return Some(format!("{}:{port}", host(address)));
    }
    let node_port = ports
        .iter()
        .find_map(|port| count(port.get("nodePort")).filter(|port| *port > 0))?;
    Some(format!("{}:{node_port}", host(api_host)))
}

/// A host for `host:port`: an IPv6 address in brackets.
fn host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
