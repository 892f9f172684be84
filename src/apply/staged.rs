//! The staged apply: every object is sent as soon as what it waits for is
//! there (see [`super::plan`]), with at most `concurrency` applies in flight.
//!
//! Each object has a state others can wait on: pending, applied, ready or
//! failed. A gate (an object something waits for) is judged ready from its
//! apply answer, else watched until ready. When an object fails, or a gate is
//! not ready by the deadline, the objects waiting for it are not applied.

use super::inventory::Key;
use super::object::{self, Applied, Live, ObjectError};
use super::plan::{Need, Plan};
use super::readiness::{self, Readiness};
use super::report::{Action, ApplyEvent, FieldConflict};
use super::resolve::{Discovery, Object};
use super::wait::{self, Target};
use super::{ApplyOptions, Sink};
use kube::Client;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// What to do with one object.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Send the apply; `recorded` is the resourceVersion the inventory holds.
    Send { recorded: Option<String> },
    /// Unchanged since the inventory recorded it: nothing is sent.
    Skip { deleting: bool },
}

/// What happened to one object.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub action: Action,
    pub error: Option<ObjectError>,
    pub conflicts: Vec<FieldConflict>,
    pub note: Option<String>,
    /// Readiness as far as known (from the answer, or waited for as a gate).
    pub readiness: Option<Readiness>,
    pub live: Option<Live>,
}

impl Outcome {
    fn new(action: Action) -> Self {
        Outcome {
            action,
            error: None,
            conflicts: Vec::new(),
            note: None,
            readiness: None,
            live: None,
        }
    }

    fn skipped(error: ObjectError) -> Self {
        Outcome {
            error: Some(error),
            ..Outcome::new(Action::Skipped)
        }
    }

    fn failed(error: ObjectError) -> Self {
        let conflicts = match &error {
            ObjectError::Conflict { conflicts, .. } => conflicts.clone(),
            _ => Vec::new(),
        };
        Outcome {
            error: Some(error),
            conflicts,
            ..Outcome::new(Action::Failed)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    /// Applied; in a dry run, `would_create` says the server cannot check
    /// objects that depend on it.
    Applied {
        would_create: bool,
    },
    Ready,
    Failed,
}

/// Everything one staged apply needs.
pub(crate) struct Staged<'a> {
    pub client: &'a Client,
    pub discovery: &'a Discovery,
    pub objects: &'a [Object],
    pub plan: &'a Plan,
    pub decisions: &'a [Decision],
    pub opts: &'a ApplyOptions,
    pub deadline: Instant,
    pub progress: Sink<'a>,
}

/// Applies every object; returns what happened to each, in order.
pub(crate) async fn run(s: &Staged<'_>) -> Vec<Outcome> {
    let n = s.objects.len();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| watch::channel(State::Pending)).unzip();
    let permits = Semaphore::new(s.opts.concurrency.max(1));
    let needed = needed_ready(s.plan, s.decisions);
    let tasks = (0..n).map(|i| {
        let receivers = &receivers;
        let tx = &senders[i];
        let permits = &permits;
        let needed = needed[i];
        async move {
            let out = one(s, i, receivers, permits, needed, tx).await;
            if tx.borrow().eq(&State::Pending) {
                let _ = tx.send(State::Failed);
            }
            out
        }
    });
    futures::future::join_all(tasks).await
}

/// `needed[i]`: an object that will be sent waits until object `i` is ready.
fn needed_ready(plan: &Plan, decisions: &[Decision]) -> Vec<bool> {
    let mut needed = vec![false; decisions.len()];
    for (k, deps) in plan.deps.iter().enumerate() {
        if matches!(decisions[k], Decision::Send { .. }) {
            for &(j, need) in deps {
                if need == Need::Ready {
                    needed[j] = true;
                }
            }
        }
    }
    needed
}

async fn one(
    s: &Staged<'_>,
    i: usize,
    receivers: &[watch::Receiver<State>],
    permits: &Semaphore,
    needed: bool,
    tx: &watch::Sender<State>,
) -> Outcome {
    let object = &s.objects[i];
    let unchecked_because = match await_deps(s, i, receivers).await {
        Ok(unchecked) => unchecked,
        Err(out) => {
            emit_applied(s, i, &out);
            let _ = tx.send(State::Failed);
            return out;
        }
    };
    if let Decision::Skip { deleting } = &s.decisions[i] {
        return unchanged(s, i, *deleting, needed, tx).await;
    }
    if let Some(j) = unchecked_because {
        // Dry run: the server does not know the kind or namespace yet.
        let out = Outcome {
            note: Some(format!(
                "not checked on the server: {} is created by this bundle",
                s.objects[j].id
            )),
            ..Outcome::new(Action::Created)
        };
        emit_applied(s, i, &out);
        let _ = tx.send(State::Applied { would_create: true });
        return out;
    }
    let recorded = match &s.decisions[i] {
        Decision::Send { recorded } => recorded.as_deref(),
        Decision::Skip { .. } => None,
    };
    let applied = {
        let _permit = permits.acquire().await;
        object::apply_object(s.client, object, recorded, s.opts, s.deadline, s.progress).await
    };
    let mut out = match applied {
        Ok(a) => from_applied(a, s),
        Err(e) => {
            let out = Outcome::failed(e);
            emit_applied(s, i, &out);
            let _ = tx.send(State::Failed);
            return out;
        }
    };
    emit_applied(s, i, &out);
    if let Some((group, _)) = &object.defines
        && matches!(
            out.action,
            Action::Created | Action::Configured | Action::Recreated
        )
    {
        s.discovery.forget_group(group);
    }
    if s.opts.dry_run || !s.plan.gates[i] {
        let _ = tx.send(State::Applied {
            would_create: s.opts.dry_run && out.action == Action::Created,
        });
        return out;
    }
    let _ = tx.send(State::Applied {
        would_create: false,
    });
    let r = gate(
        s,
        i,
        out.readiness.clone(),
        out.live.as_ref().and_then(Live::generation),
    )
    .await;
    if let Some((group, _)) = &object.defines {
        s.discovery.forget_group(group);
    }
    let _ = tx.send(if r.is_ready() {
        State::Ready
    } else {
        State::Failed
    });
    out.readiness = Some(r);
    out
}

/// Waits until everything object `i` waits for is there. `Ok(Some(j))`: in
/// a dry run, object `j` would be created by this bundle, so the server
/// cannot check object `i`; `Err`: an object it waits for failed (object `i`
/// is skipped).
async fn await_deps(
    s: &Staged<'_>,
    i: usize,
    receivers: &[watch::Receiver<State>],
) -> Result<Option<usize>, Outcome> {
    let mut unchecked_because = None;
    for &(j, need) in &s.plan.deps[i] {
        let mut rx = receivers[j].clone();
        let state = rx
            .wait_for(|st| match st {
                State::Pending => false,
                State::Applied { .. } => need == Need::Applied || s.opts.dry_run,
                State::Ready | State::Failed => true,
            })
            .await
            .map(|st| *st)
            .unwrap_or(State::Failed);
        match state {
            State::Failed => {
                return Err(Outcome::skipped(ObjectError::Dependency(
                    s.objects[j].id.clone(),
                )));
            }
            State::Applied { would_create: true } => {
                unchecked_because.get_or_insert(j);
            }
            _ => {}
        }
    }
    Ok(unchecked_because)
}

/// An object the inventory shows unchanged: nothing is sent.
async fn unchanged(
    s: &Staged<'_>,
    i: usize,
    deleting: bool,
    needed: bool,
    tx: &watch::Sender<State>,
) -> Outcome {
    let object = &s.objects[i];
    let mut out = Outcome::new(Action::Unchanged);
    if !deleting
        && !s
            .opts
            .readiness
            .needs_status(&object.id.group, &object.id.kind)
    {
        out.readiness = Some(Readiness::Ready);
    }
    emit_applied(s, i, &out);
    if !needed || s.opts.dry_run || out.readiness.is_some() {
        let _ = tx.send(State::Ready);
        return out;
    }
    let r = gate(s, i, None, None).await;
    let _ = tx.send(if r.is_ready() {
        State::Ready
    } else {
        State::Failed
    });
    out.readiness = Some(r);
    out
}

/// Waits until a gate is ready (unless its answer already says so).
async fn gate(
    s: &Staged<'_>,
    i: usize,
    known: Option<Readiness>,
    generation: Option<i64>,
) -> Readiness {
    if let Some(r) = &known
        && !matches!(r, Readiness::InProgress(_))
    {
        return r.clone();
    }
    let object = &s.objects[i];
    let target = Target {
        id: object.id.clone(),
        ar: object.ar.clone(),
        generation,
        last: known.unwrap_or_else(|| Readiness::InProgress("not observed yet".into())),
    };
    wait::wait_all(
        s.client,
        &[target],
        s.deadline,
        &s.opts.readiness,
        s.progress,
    )
    .await
    .pop()
    .unwrap_or_else(|| Readiness::InProgress("not observed".into()))
}

fn from_applied(a: Applied, s: &Staged<'_>) -> Outcome {
    let readiness = a
        .live
        .as_ref()
        .map(|l| readiness::readiness(&l.slim.to_value(), l.generation(), &s.opts.readiness));
    Outcome {
        action: a.action,
        error: None,
        conflicts: a.conflicts,
        note: a.note,
        readiness,
        live: a.live,
    }
}

fn emit_applied(s: &Staged<'_>, i: usize, out: &Outcome) {
    (s.progress)(ApplyEvent::Applied {
        object: s.objects[i].id.clone(),
        action: out.action,
        error: out.error.clone(),
    });
}

/// The inventory key of an object.
pub(crate) fn key(object: &Object) -> Key {
    super::inventory::key_of(&object.id)
}
