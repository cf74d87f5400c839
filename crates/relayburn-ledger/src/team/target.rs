//! Where a team ledger lives: a PostgreSQL connection string, its TLS
//! mode, and a printable name that never carries the password.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use native_tls::{Certificate, TlsConnector};
use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};
use postgres_native_tls::MakeTlsConnector;

use crate::error::{Error, Result};

/// How long a connection attempt may take before it is reported.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The libpq `sslmode` values. rust-postgres parses only the first three,
/// so the mode is read here and turned into a connector with the checks
/// libpq makes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Allow,
    Prefer,
    /// Encrypted, certificate not checked (libpq's meaning).
    Require,
    /// Encrypted, certificate chain checked, host name not.
    VerifyCa,
    /// Encrypted, chain and host name checked.
    VerifyFull,
}

impl TlsMode {
    fn parse(s: &str) -> Option<TlsMode> {
        Some(match s {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A parsed connection string. `Debug` and `Display` show the redacted
/// form only.
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: TlsMode,
    root_cert: Option<std::path::PathBuf>,
    /// The password as written and as decoded, to scrub from messages.
    secrets: Vec<String>,
    display: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.display).finish()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Split `sslmode` and `sslrootcert` out of a URL's query or a key=value
/// string; the rest goes to rust-postgres unchanged.
fn split_tls_params(s: &str) -> (String, Vec<(String, String)>) {
    let mut taken = Vec::new();
    let is_tls = |k: &str| k == "sslmode" || k == "sslrootcert";
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else {
            return (s.to_string(), taken);
        };
        let mut kept = Vec::new();
        for part in query.split('&') {
            match part.split_once('=') {
                Some((k, v)) if is_tls(k) => taken.push((k.to_string(), v.to_string())),
                _ => kept.push(part),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    let mut kept = Vec::new();
    for part in s.split_whitespace() {
        match part.split_once('=') {
            Some((k, v)) if is_tls(k.trim()) => {
                taken.push((k.trim().to_string(), v.trim_matches('\'').to_string()))
            }
            _ => kept.push(part),
        }
    }
    (kept.join(" "), taken)
}

/// The password as it appears in a URL (`user:PASSWORD@`) or a key=value
/// string (`password=PASSWORD`), before any decoding.
fn raw_password(s: &str) -> Option<String> {
    if let Some(rest) = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next()?;
        let userinfo = authority.rsplit_once('@')?.0;
        return userinfo.split_once(':').map(|(_, p)| p.to_string());
    }
    s.split_whitespace()
        .find_map(|p| p.strip_prefix("password="))
        .map(|p| p.trim_matches('\'').to_string())
}

impl Target {
    /// Parse a `postgres://` URL or a libpq key=value string.
    pub fn parse(s: &str) -> Result<Target> {
        let mut secrets: Vec<String> = raw_password(s).into_iter().collect();
        let scrub = |msg: String, secrets: &[String]| scrub_all(msg, secrets);
        let (rest, tls_params) = split_tls_params(s);
        let mut config = Config::from_str(&rest).map_err(|e| Error::Postgres {
            target: "(unparsed connection string)".into(),
            message: scrub(format!("invalid connection string: {e}"), &secrets),
        })?;
        if let Some(p) = config.get_password() {
            secrets.push(String::from_utf8_lossy(p).into_owned());
        }
        secrets.retain(|p| !p.is_empty());
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        for (k, v) in tls_params {
            if k == "sslmode" {
                tls = TlsMode::parse(&v).ok_or_else(|| Error::Postgres {
                    target: "(unparsed connection string)".into(),
                    message: format!(
                        "invalid sslmode {:?}: expected disable, allow, prefer, require, verify-ca or verify-full",
                        scrub(v.clone(), &secrets)
                    ),
                })?;
            } else {
                root_cert = Some(std::path::PathBuf::from(v));
            }
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("burn");
        let display = redacted(&config);
        Ok(Target {
            config,
            tls,
            root_cert,
            secrets,
            display,
        })
    }

    /// `user@host:port/dbname`, the name under which pushes are recorded.
    pub fn name(&self) -> &str {
        &self.display
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    /// Remove the password from a message, however it got there.
    pub fn scrub(&self, msg: String) -> String {
        scrub_all(msg, &self.secrets)
    }

    /// An error about this target, password scrubbed.
    pub fn error(&self, message: impl fmt::Display) -> Error {
        Error::Postgres {
            target: self.display.clone(),
            message: self.scrub(message.to_string()),
        }
    }

    /// A database error with its context.
    pub fn db_error(&self, what: &str, e: postgres::Error) -> Error {
        self.error(format_args!("{what}: {}", describe(&e)))
    }

    /// Open a connection with the TLS checks `sslmode` asks for.
    pub fn connect(&self) -> Result<Client> {
        let client = if self.tls == TlsMode::Disable {
            self.config.connect(NoTls)
        } else {
            self.config.connect(self.connector()?)
        };
        client.map_err(|e| self.db_error("connect", e))
    }

    fn connector(&self) -> Result<MakeTlsConnector> {
        let mut b = TlsConnector::builder();
        match self.tls {
            TlsMode::Disable | TlsMode::Allow | TlsMode::Prefer | TlsMode::Require => {
                // libpq checks nothing in these modes unless a root
                // certificate is given, which upgrades to verify-ca.
                // Nothing is verified, so the system's roots need not be
                // loaded (a visible part of a short push's time).
                if self.root_cert.is_none() {
                    b.danger_accept_invalid_certs(true);
                    b.disable_built_in_roots(true);
                }
                b.danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyCa => {
                b.danger_accept_invalid_hostnames(true);
            }
            TlsMode::VerifyFull => {}
        }
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| self.error(format_args!("sslrootcert {}: {e}", path.display())))?;
            b.add_root_certificate(cert);
        }
        let c = b
            .build()
            .map_err(|e| self.error(format_args!("TLS setup: {e}")))?;
        Ok(MakeTlsConnector::new(c))
    }
}

fn scrub_all(mut msg: String, secrets: &[String]) -> String {
    for s in secrets {
        if !s.is_empty() && msg.contains(s.as_str()) {
            msg = msg.replace(s.as_str(), "***");
        }
    }
    msg
}

/// A server error with its SQLSTATE meaning spelled out; other errors as
/// the driver words them, with their cause.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

fn redacted(c: &Config) -> String {
    let user = c.get_user().unwrap_or("");
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().unwrap_or(user);
    if user.is_empty() {
        format!("{host}:{port}/{db}")
    } else {
        format!("{user}@{host}:{port}/{db}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let t =
            Target::parse("postgres://u:s3cr%40t@db.example:6543/team?sslmode=require").unwrap();
        assert_eq!(t.name(), "u@db.example:6543/team");
        assert_eq!(format!("{t:?}"), "Target(\"u@db.example:6543/team\")");
        assert_eq!(t.tls_mode(), TlsMode::Require);
        let m = t.scrub("saw s3cr%40t and s3cr@t".into());
        assert_eq!(m, "saw *** and ***");
    }

    #[test]
    fn key_value_strings_and_tls_modes() {
        let t =
            Target::parse("host=h port=7 user=u password=pw dbname=d sslmode=verify-full").unwrap();
        assert_eq!(t.name(), "u@h:7/d");
        assert_eq!(t.tls_mode(), TlsMode::VerifyFull);
        assert_eq!(t.scrub("pw!".into()), "***!");
        let e = Target::parse("postgres://u:hunter2@h/d?sslmode=bogus").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("sslmode"), "{e}");
        assert_eq!(
            Target::parse("postgres://h/d").unwrap().tls_mode(),
            TlsMode::Prefer
        );
    }

    #[test]
    fn parse_errors_do_not_echo_the_password() {
        let e = Target::parse("postgres://u:hunter2@h:notaport/d").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
