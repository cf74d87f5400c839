//! The home's side of pushing (`push.json`): the machine id, generated
//! once, and what was last pushed to each server. This is the only file
//! `burn push` writes in a home.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsio::{replace_file_via, tmp_path};
use crate::json::{self, Object, Value};
use crate::ledger::Ledger;
use crate::state::{read_optional, to_json_pretty};

/// The lock under which `push.json` is read and rewritten.
pub const PUSH_LOCK: &str = crate::home::lock_name::PUSH;

/// Longest machine id accepted.
const MAX_MACHINE_ID: usize = 128;

/// The document of `push.json`; unknown fields survive a rewrite.
fn load(ledger: &Ledger) -> Result<Object> {
    let path = ledger.home().push_state();
    let Some(text) = read_optional(&path)? else {
        return Ok(Object::new());
    };
    json::parse(&text)
        .ok()
        .and_then(Value::into_object)
        .ok_or_else(|| Error::Corrupt {
            path,
            offset: None,
            reason: "push state is not a JSON object".into(),
        })
}

fn save(ledger: &Ledger, doc: Object) -> Result<()> {
    let path = ledger.home().push_state();
    let body = to_json_pretty(&Value::Object(doc));
    replace_file_via(&path, &tmp_path(&path), body.as_bytes()).map(drop)
}

/// A machine id must be printable and short; it names a machine in
/// every row it pushes.
pub fn validate_machine_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_MACHINE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "machine_id",
            format!(
                "invalid machine id {id:?}: 1 to {MAX_MACHINE_ID} characters of A-Z a-z 0-9 . _ - : @"
            ),
        ))
    }
}

fn generate(ledger: &Ledger) -> String {
    let mut h = Sha256::new();
    h.update(ledger.home().root().to_string_lossy().as_bytes());
    h.update(std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(nanos.to_le_bytes());
    let tag: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let host: String = crate::lock::this_host()
        .unwrap_or("machine")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    format!("{host}-{tag}")
}

impl Ledger {
    /// This home's machine id: `preferred` when given, else the one stored
    /// in `push.json`, generated and stored on first use.
    pub fn machine_id(&self, preferred: Option<&str>) -> Result<String> {
        if let Some(id) = preferred {
            validate_machine_id(id)?;
            return Ok(id.to_string());
        }
        if let Some(Value::String(s)) = load(self)?.get("machineId") {
            let id = s.to_lossy().into_owned();
            validate_machine_id(&id)?;
            return Ok(id);
        }
        self.with_lock(PUSH_LOCK, || {
            let mut doc = load(self)?;
            if let Some(Value::String(s)) = doc.get("machineId") {
                return Ok(s.to_lossy().into_owned());
            }
            let id = generate(self);
            doc.insert("machineId", Value::str(&id));
            save(self, doc)?;
            Ok(id)
        })
    }

    /// The machine id stored in `push.json`, without generating one.
    pub fn stored_machine_id(&self) -> Result<Option<String>> {
        Ok(load(self)?
            .get("machineId")
            .and_then(Value::as_js_string)
            .map(|s| s.to_lossy().into_owned()))
    }

    /// The last push to each server, keyed by the server's redacted name.
    pub fn push_records(&self) -> Result<Object> {
        Ok(load(self)?
            .remove("pushes")
            .and_then(Value::into_object)
            .unwrap_or_default())
    }

    /// Record a committed push to `target`.
    pub(crate) fn record_push(&self, target: &str, entry: Value) -> Result<()> {
        self.with_lock(PUSH_LOCK, || {
            let mut doc = load(self)?;
            let mut pushes = doc
                .remove("pushes")
                .and_then(Value::into_object)
                .unwrap_or_default();
            pushes.insert(target, entry);
            doc.insert("pushes", Value::Object(pushes));
            save(self, doc)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::LedgerHome;

    #[test]
    fn machine_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        let a = ledger.machine_id(None).unwrap();
        validate_machine_id(&a).unwrap();
        let again = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        assert_eq!(again.machine_id(None).unwrap(), a);
        assert_eq!(ledger.machine_id(Some("laptop-7")).unwrap(), "laptop-7");
        assert!(ledger.machine_id(Some("a b")).is_err());
        assert!(ledger.machine_id(Some("")).is_err());
    }

    #[test]
    fn push_records_keep_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        std::fs::write(ledger.home().push_state(), r#"{"machineId":"m","x":1}"#).unwrap();
        ledger.record_push("u@h:1/d", Value::Number(5.0)).unwrap();
        let doc = load(&ledger).unwrap();
        assert_eq!(doc.get("x").and_then(Value::as_f64), Some(1.0));
        assert_eq!(ledger.machine_id(None).unwrap(), "m");
        let pushes = ledger.push_records().unwrap();
        assert_eq!(pushes.get("u@h:1/d").and_then(Value::as_f64), Some(5.0));
    }
}
