//! The service's endpoints record after a plan: which tasks receive new connections once the
//! plan's stops and orphan marks are written. Tasks the plan stops leave the record in the same
//! (first) write, before their agent sees the stop, so no new connection reaches a task that is
//! about to be signalled.

use std::borrow::Cow;
use std::collections::BTreeSet;

use shoal_core::endpoints::{Endpoints, allocate_address, eligible};
use shoal_core::model::DesiredState;

use super::{Plan, ReconcileInput, ServiceInput};

/// What to do with `endpoints/<ns>/<service>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum EndpointsChange {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Write this record.
    Put(Box<Endpoints>),
    /// Remove it (the service is gone).
    Delete,
}

/// The endpoints change that goes with `plan`.
pub fn plan_endpoints(input: &ReconcileInput, plan: &Plan) -> EndpointsChange {
    let ports = match &input.service {
        ServiceInput::Present { service, .. } => service.spec.ports.clone(),
        ServiceInput::Invalid { .. } => match &input.endpoints {
            Some(e) => e.ports.clone(),
            None => return EndpointsChange::Keep,
        },
        ServiceInput::Deleted => {
            return match input.endpoints {
                Some(_) => EndpointsChange::Delete,
                None => EndpointsChange::Keep,
            };
        }
    };
    let stopped: BTreeSet<&str> = plan
        .stops
        .iter()
        .chain(&plan.orphans)
        .map(|r| r.task.as_str())
        .collect();
    // Only the tasks the plan stops are copied (to show them stopped).
    let after: Vec<_> = input
        .tasks
        .iter()
        .map(|e| {
            let task = if stopped.contains(e.task.id.as_str()) {
                let mut t = e.task.clone();
                t.desired_state = DesiredState::Shutdown;
                Cow::Owned(t)
            } else {
                Cow::Borrowed(&e.task)
            };
            (task, e.status.as_ref())
        })
        .collect();
    let tasks = eligible(after.iter().map(|(t, s)| (t.as_ref(), *s)), &input.nodes);
    let address = match &input.endpoints {
        Some(e) => e.address,
        None => allocate_address(&input.service_ref, &input.taken_addresses),
    };
    let record = Endpoints {
        service: input.service_ref.clone(),
        address,
        ports,
        tasks,
    };
    if input.endpoints.as_ref() == Some(&record) {
        EndpointsChange::Keep
    } else {
        EndpointsChange::Put(Box::new(record))
    }
}
