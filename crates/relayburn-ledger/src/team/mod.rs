//! The team ledger: every machine keeps its home and pushes what is new
//! into one shared PostgreSQL database (`burn push`), where the team's
//! records can be queried with the local query's semantics.

pub mod local;
pub mod push;
pub mod query;
pub mod schema;
pub mod source;
pub mod target;

pub use push::{PushObserver, PushOptions, PushProgress, PushSummary};
pub use target::Target;

use crate::error::Result;
use crate::json::{Object, Value};
use crate::ledger::Ledger;

/// The push state of a home for `burn state status`: its machine id, its
/// last push to each server, and, when a server is given, every
/// machine's last push there (or why the server could not be asked; a
/// status report does not fail on an unreachable server). `None` for a
/// home that never pushed when no server is given, so the status keeps
/// the reference's shape.
pub fn push_status(ledger: &Ledger, target: Option<&Target>) -> Result<Option<Value>> {
    let machine = ledger.stored_machine_id()?;
    let pushes = ledger.push_records()?;
    if target.is_none() && machine.is_none() && pushes.is_empty() {
        return Ok(None);
    }
    let mut o = Object::new();
    o.insert("machineId", machine.map_or(Value::Null, |m| Value::str(&m)));
    o.insert("pushes", Value::Object(pushes));
    if let Some(t) = target {
        let mut server = Object::new();
        server.insert("target", Value::str(t.name()));
        match query::TeamLedger::open(t).and_then(|mut team| team.machines()) {
            Ok(machines) => server.insert(
                "machines",
                Value::Array(machines.iter().map(|m| m.to_value()).collect()),
            ),
            Err(e) => server.insert("error", Value::str(&e.to_string())),
        }
        o.insert("server", Value::Object(server));
    }
    Ok(Some(Value::Object(o)))
}
