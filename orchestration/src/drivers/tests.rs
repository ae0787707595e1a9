//! Driver-trait tests: the agent API's shape, `NoneStorage`, and a fake hook-style
//! hypervisor proving the traits can be implemented and driven without a runtime.

use super::*;
use crate::migration::{HypervisorPlan, MigrationPlan, QuiesceStyle};
use crate::pe::{MigrationId, PeMigration, Phase, Role};
use crate::Time;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Polls a future that must complete without waiting on anything external.
fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

/// A sink that collects into a shared vector, like a channel sender would.
fn collector<E: Send + 'static>() -> (impl EventSink<E> + Clone, Arc<Mutex<Vec<E>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (move |e: E| s.lock().unwrap().push(e), seen)
}

#[test]
fn agent_ops_map_to_the_rest_api() {
    let id = MigrationId::new("vm1-move").unwrap();
    let table = [
        (AgentOp::Prepare, "PUT", "/v1/migrations/vm1-move"),
        (
            AgentOp::Switchover,
            "POST",
            "/v1/migrations/vm1-move/switchover",
        ),
        (
            AgentOp::Announce,
            "POST",
            "/v1/migrations/vm1-move/announce",
        ),
        (
            AgentOp::Complete,
            "POST",
            "/v1/migrations/vm1-move/complete",
        ),
        (AgentOp::Abort, "POST", "/v1/migrations/vm1-move/abort"),
        (AgentOp::Status, "GET", "/v1/migrations/vm1-move"),
    ];
    for (op, method, path) in table {
        assert_eq!((op.method(), op.path(&id).as_str()), (method, path), "{op}");
    }
}

#[test]
fn agent_status_decodes_the_agents_own_get_answer() {
    let plan: MigrationPlan = serde_json::from_str(
        r#"{"id":"vm1-move","vm":{"name":"vm1","prefixes":["10.0.0.1/32"]},
            "source":{"agent_url":"http://pe-a:8080","tunnel_endpoint":"192.0.2.1"},
            "destination":{"agent_url":"http://pe-b:8080","tunnel_endpoint":"192.0.2.2"},
            "tunnel":{"kind":"vxlan","vni":7},
            "hypervisor":{"kind":"libvirt","source_uri":"a","destination_uri":"b"}}"#,
    )
    .unwrap();
    assert_eq!(plan.hypervisor.quiesce_style(), QuiesceStyle::Observe);
    assert!(matches!(plan.hypervisor, HypervisorPlan::Libvirt { .. }));
    let (m, _) = PeMigration::prepare(
        plan.id.clone(),
        plan.agent_spec(Role::Destination),
        Time::from_millis(5),
    )
    .unwrap();
    let body = serde_json::to_string(&m.status()).unwrap();
    let s: AgentStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(s.id, plan.id);
    assert_eq!(s.phase, Phase::Prepared);
}

#[test]
fn agent_errors_say_what_to_retry() {
    let url = "http://pe-a:8080".to_string();
    let rejected = |status| AgentError::Rejected {
        url: url.clone(),
        op: AgentOp::Switchover,
        status,
        message: "x".into(),
    };
    assert!(rejected(503).is_transient());
    assert!(!rejected(409).is_transient());
    assert!(AgentError::Timeout {
        url: url.clone(),
        op: AgentOp::Prepare,
        after_ms: 5_000
    }
    .is_transient());
    let e = AgentError::Decode {
        url,
        op: AgentOp::Status,
        reason: "eof".into(),
    };
    assert!(!e.is_transient());
    assert_eq!(
        e.to_string(),
        "agent http://pe-a:8080: status: undecodable answer: eof"
    );
}

#[test]
fn none_storage_is_done_at_once() {
    let (sink, seen) = collector();
    let s = NoneStorage;
    assert_eq!(now_or_never(assert_send(s.start_async(sink))), Some(Ok(())));
    assert_eq!(
        *seen.lock().unwrap(),
        [StorageEvent::Ready, StorageEvent::InSync]
    );
    assert_eq!(now_or_never(s.switch_sync()), Some(Ok(())));
    assert_eq!(now_or_never(s.wait_in_sync()), Some(Ok(())));
    assert_eq!(now_or_never(s.cutover()), Some(Ok(())));
    assert_eq!(now_or_never(s.abort()), Some(Ok(())));
}

/// A hook-style hypervisor like the lab's: suspend, wait for the gate, move, resume.
struct FakeLab {
    vm: String,
}

impl Hypervisor for FakeLab {
    fn migrate<S, G>(
        &self,
        events: S,
        mut gate: G,
    ) -> impl Future<Output = Result<(), HypervisorError>> + Send
    where
        S: EventSink<HypervisorEvent>,
        G: QuiesceGate,
    {
        let vm = self.vm.clone();
        async move {
            events.emit(HypervisorEvent::Progress(MigrationProgress {
                total_bytes: 10,
                processed_bytes: 10,
                remaining_bytes: 0,
                iteration: 1,
                dirty_rate_pages: None,
            }));
            events.emit(HypervisorEvent::Suspended);
            match gate.quiesced().await {
                GateDecision::Resume => {
                    events.emit(HypervisorEvent::Resumed);
                    events.emit(HypervisorEvent::Completed);
                    Ok(())
                }
                GateDecision::Cancel => {
                    events.emit(HypervisorEvent::Failed {
                        error: "cancelled at quiesce".into(),
                    });
                    Err(HypervisorError::Cancelled { vm })
                }
            }
        }
    }

    fn cancel(&self) -> impl Future<Output = Result<(), HypervisorError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A gate whose decision is set by the test (the runtime would use a oneshot).
struct Decided(GateDecision);

impl QuiesceGate for Decided {
    fn quiesced(&mut self) -> impl Future<Output = GateDecision> + Send {
        std::future::ready(self.0)
    }
}

#[test]
fn hook_style_hypervisor_obeys_the_gate() {
    let lab = FakeLab { vm: "vm".into() };
    let (sink, seen) = collector();
    let r = now_or_never(assert_send(lab.migrate(sink, ResumeImmediately)));
    assert_eq!(r, Some(Ok(())));
    let kinds: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| !matches!(e, HypervisorEvent::Progress(_)))
        .cloned()
        .collect();
    assert_eq!(
        kinds,
        [
            HypervisorEvent::Suspended,
            HypervisorEvent::Resumed,
            HypervisorEvent::Completed
        ]
    );

    let (sink, seen) = collector();
    let r = now_or_never(lab.migrate(sink, Decided(GateDecision::Cancel)));
    assert_eq!(r, Some(Err(HypervisorError::Cancelled { vm: "vm".into() })));
    assert!(!seen.lock().unwrap().contains(&HypervisorEvent::Resumed));
    assert_eq!(now_or_never(lab.cancel()), Some(Ok(())));
}

#[test]
fn hypervisor_events_are_tagged_json() {
    let e = HypervisorEvent::Failed { error: "x".into() };
    let j = serde_json::to_string(&e).unwrap();
    assert_eq!(j, r#"{"event":"failed","error":"x"}"#);
    assert_eq!(serde_json::from_str::<HypervisorEvent>(&j).unwrap(), e);
    assert_eq!(
        serde_json::to_string(&StorageEvent::InSync).unwrap(),
        r#"{"event":"in-sync"}"#
    );
}
