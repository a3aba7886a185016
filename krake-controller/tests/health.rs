//! An application's health from its live objects (`kubernetes::health`):
//! pods, replicated workloads, DaemonSets, Jobs, the worst state winning
//! across workloads, Service endpoints, and hostile JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use krake_controller::kubernetes::health::{
    ResourceHealth, application_health, service_endpoint, workload_health,
};
use krake_data::kinds::kubernetes::{ApplicationState, ContainerHealth};
use serde_json::{Value, json};

fn pods(desired: i64, running: i64, completed: i64, failed: i64) -> ContainerHealth {
    ContainerHealth {
        desired_pods: desired,
        running_pods: running,
        completed_pods: completed,
        failed_pods: failed,
    }
}

fn health(live: Value) -> (ApplicationState, ContainerHealth) {
    let health = workload_health(&live).expect("a workload");
    (health.state, health.pods)
}

fn pod(policy: Option<&str>, phase: &str, statuses: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase, "containerStatuses": statuses},
    });
    if let Some(policy) = policy {
        pod["spec"]["restartPolicy"] = json!(policy);
    }
    pod
}

fn terminated(code: i64) -> Value {
    json!({"name": "c", "state": {"terminated": {"exitCode": code}}})
}

#[test]
fn pods_run_crash_restart_and_complete() {
    let running = json!([{"name": "c", "state": {"running": {}}}]);
    assert_eq!(
        health(pod(None, "Running", running.clone())),
        (ApplicationState::Running, pods(1, 1, 0, 0))
    );
    // Pending is desired, not running.
    assert_eq!(
        health(pod(None, "Pending", json!([]))),
        (ApplicationState::Running, pods(1, 0, 0, 0))
    );
    // A crash loop in any container, not only the first.
    let crash = json!([
        {"name": "a", "state": {"running": {}}},
        {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
    ]);
    assert_eq!(
        health(pod(None, "Running", crash)).0,
        ApplicationState::Degraded
    );
    // Terminated and restarted by policy Always (the default).
    assert_eq!(
        health(pod(None, "Running", json!([terminated(0)]))).0,
        ApplicationState::Restarting
    );
    // OnFailure: a zero exit is done, a failure restarts.
    assert_eq!(
        health(pod(Some("OnFailure"), "Succeeded", json!([terminated(0)]))),
        (ApplicationState::Completed, pods(1, 0, 1, 0))
    );
    assert_eq!(
        health(pod(Some("OnFailure"), "Running", json!([terminated(2)]))).0,
        ApplicationState::Restarting
    );
    // Never: finished for good, failed when any exit is non-zero.
    assert_eq!(
        health(pod(
            Some("Never"),
            "Failed",
            json!([terminated(0), terminated(1)])
        )),
        (ApplicationState::Completed, pods(1, 0, 0, 1))
    );
    // One container still running: not finished.
    assert_eq!(
        health(pod(
            Some("Never"),
            "Running",
            json!([terminated(0), {"name": "d", "state": {"running": {}}}])
        )),
        (ApplicationState::Running, pods(1, 1, 0, 0))
    );
    // Without container statuses the phase decides.
    assert_eq!(
        health(pod(Some("Never"), "Succeeded", Value::Null)),
        (ApplicationState::Completed, pods(1, 0, 1, 0))
    );
}

#[test]
fn replicated_workloads_compare_ready_with_desired() {
    for kind in ["Deployment", "StatefulSet", "ReplicaSet"] {
        let workload = |replicas: Value, ready: Value| json!({"kind": kind, "spec": {"replicas": replicas}, "status": {"readyReplicas": ready, "replicas": 7}});
        assert_eq!(
            health(workload(json!(3), json!(3))),
            (ApplicationState::Running, pods(3, 3, 0, 0)),
            "{kind}"
        );
        assert_eq!(
            health(workload(json!(3), json!(1))),
            (ApplicationState::Degraded, pods(3, 1, 0, 0)),
            "{kind}"
        );
        // More ready than desired (a scale-down in progress) is fine.
        assert_eq!(
            health(workload(json!(1), json!(2))).0,
            ApplicationState::Running,
            "{kind}"
        );
        // spec.replicas absent means 1; readyReplicas absent means 0.
        assert_eq!(
            health(json!({"kind": kind, "spec": {}})),
            (ApplicationState::Degraded, pods(1, 0, 0, 0)),
            "{kind}"
        );
    }
    let daemons = |desired: i64, ready: i64| json!({"kind": "DaemonSet", "status": {"desiredNumberScheduled": desired, "numberReady": ready, "currentNumberScheduled": 9}});
    assert_eq!(
        health(daemons(4, 4)),
        (ApplicationState::Running, pods(4, 4, 0, 0))
    );
    assert_eq!(health(daemons(4, 3)).0, ApplicationState::Degraded);
}

#[test]
fn jobs_run_complete_and_fail() {
    let job = |status: Value| json!({"kind": "Job", "spec": {"completions": 2}, "status": status});
    assert_eq!(
        health(job(json!({"active": 2}))),
        (ApplicationState::Running, pods(2, 2, 0, 0))
    );
    assert_eq!(
        health(job(json!({"succeeded": 2}))),
        (ApplicationState::Completed, pods(2, 0, 2, 0))
    );
    assert_eq!(
        health(job(
            json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True"}]})
        )),
        (ApplicationState::Degraded, pods(2, 0, 0, 3))
    );
    assert_eq!(
        health(job(
            json!({"conditions": [{"type": "Complete", "status": "True"}]})
        ))
        .0,
        ApplicationState::Completed
    );
    // A condition that is not true does not count.
    assert_eq!(
        health(job(
            json!({"conditions": [{"type": "Failed", "status": "False"}]})
        ))
        .0,
        ApplicationState::Running
    );
}

#[test]
fn the_worst_state_wins_whatever_the_order() {
    let running = ResourceHealth {
        state: ApplicationState::Running,
        pods: pods(2, 2, 0, 0),
    };
    let degraded = ResourceHealth {
        state: ApplicationState::Degraded,
        pods: pods(1, 0, 0, 0),
    };
    let restarting = ResourceHealth {
        state: ApplicationState::Restarting,
        pods: pods(1, 0, 0, 0),
    };
    let completed = ResourceHealth {
        state: ApplicationState::Completed,
        pods: pods(1, 0, 1, 0),
    };
    for order in [
        vec![degraded.clone(), running.clone()],
        vec![running.clone(), degraded.clone()],
    ] {
        assert_eq!(
            application_health(order),
            (pods(3, 2, 0, 0), Some(ApplicationState::Degraded))
        );
    }
    assert_eq!(
        application_health([running.clone(), restarting, completed.clone()]).1,
        Some(ApplicationState::Restarting)
    );
    assert_eq!(
        application_health([completed.clone(), completed]).1,
        Some(ApplicationState::Completed)
    );
    assert_eq!(application_health([]), (pods(0, 0, 0, 0), None));
    // Sums saturate instead of overflowing.
    let huge = ResourceHealth {
        state: ApplicationState::Running,
        pods: pods(i64::MAX, i64::MAX, 0, 0),
    };
    assert_eq!(
        application_health([huge.clone(), huge]).0.desired_pods,
        i64::MAX
    );
}

#[test]
fn services_report_node_ports_and_load_balancers() {
    let node_port = json!({"spec": {"type": "NodePort", "ports": [
        {"port": 80},
        {"port": 443, "nodePort": 31443},
    ]}});
    assert_eq!(
        service_endpoint(&node_port, "10.0.0.1").as_deref(),
        Some("10.0.0.1:31443")
    );
    assert_eq!(
        service_endpoint(&node_port, "2001:db8::1").as_deref(),
        Some("[2001:db8::1]:31443")
    );
    let cluster_ip = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
    assert_eq!(service_endpoint(&cluster_ip, "10.0.0.1"), None);

    let balancer = |ingress: Value| {
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "nodePort": 30001}]},
               "status": {"loadBalancer": {"ingress": ingress}}})
    };
    assert_eq!(
        service_endpoint(&balancer(json!([{"ip": "192.0.2.7"}])), "h").as_deref(),
        Some("192.0.2.7:8080")
    );
    assert_eq!(
        service_endpoint(&balancer(json!([{"hostname": "lb.example.com"}])), "h").as_deref(),
        Some("lb.example.com:8080")
    );
    assert_eq!(
        service_endpoint(&balancer(json!([])), "h").as_deref(),
        Some("<pending>:8080")
    );
}

#[test]
fn hostile_json_never_panics_and_counts_as_absent() {
    let hostile = [
        json!(null),
        json!([]),
        json!("Deployment"),
        json!({"kind": 3}),
        json!({"kind": "Deployment", "spec": {"replicas": "three"}, "status": {"readyReplicas": -5}}),
        json!({"kind": "Deployment", "spec": {"replicas": 1.5}}),
        json!({"kind": "Deployment", "spec": {"replicas": u64::MAX}}),
        json!({"kind": "Pod", "spec": [], "status": {"containerStatuses": "x"}}),
        json!({"kind": "Pod", "status": {"containerStatuses": [null, 1, {"state": {"terminated": "x"}}]}}),
        json!({"kind": "Job", "status": {"conditions": {"type": "Failed"}}}),
        json!({"kind": "DaemonSet", "status": null}),
    ];
    for live in &hostile {
        let _ = workload_health(live);
        let _ = service_endpoint(live, "h");
    }
    assert_eq!(workload_health(&json!({"kind": "ConfigMap"})), None);
    assert_eq!(workload_health(&json!({"kind": 3})), None);
    // A negative count is zero; a count of the wrong type is absent.
    assert_eq!(
        health(hostile[4].clone()),
        (ApplicationState::Degraded, pods(1, 0, 0, 0))
    );
    // A count beyond i64 saturates.
    assert_eq!(health(hostile[6].clone()).1.desired_pods, i64::MAX);
    let service =
        json!({"spec": {"type": "NodePort", "ports": [{"nodePort": "x"}, {"nodePort": -3}]}});
    assert_eq!(service_endpoint(&service, "h"), None);
}
