//! `--config-file`: etcd's YAML configuration file.
//!
//! etcd reads it with `sigs.k8s.io/yaml` into its `embed.Config`, so the keys
//! are the flag names (its JSON tags), with these differences from the
//! command line:
//!
//! * TLS sits in `client-transport-security` and `peer-transport-security`
//!   maps of {`cert-file`, `key-file`, `client-cert-auth`, `trusted-ca-file`,
//!   `auto-tls`}; the other TLS flags have no key.
//! * URL lists, `cors` and `host-whitelist` are comma-separated strings (an
//!   empty one keeps the default); `log-outputs`, `log-output` and
//!   `cipher-suites` are YAML lists.
//! * Durations are integers of nanoseconds; `heartbeat-interval`,
//!   `election-timeout` and the `proxy-*` times are integers of milliseconds,
//!   as on the command line.
//! * `enable-grpc-gateway` defaults to false (etcd 3.4's `embed.NewConfig`
//!   leaves it unset; only the flag defaults to true).
//!
//! cairn also takes a Go duration string where nanoseconds are expected, a
//! comma-separated string where a list is expected, and warns about keys it
//! does not know (etcd ignores them silently).

use std::path::Path;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use super::flags::{Kind, Settings, Source, Value, lookup};
use super::{ConfigError, Message, values};

/// Flags that have no key in the file.
const NOT_IN_FILE: &[&str] = &[
    "config-file",
    "version",
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "peer-crl-file",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "experimental-peer-skip-client-san-verification",
];

/// The keys of a `*-transport-security` map and the flags they stand for.
const CLIENT_TLS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
];
const PEER_TLS: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
];

/// Reads the file at `path`.
pub(crate) fn load(path: &Path) -> Result<(Settings, Vec<Message>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let (settings, mut messages) = from_yaml(&text)
        .map_err(|why| ConfigError::invalid(format!("{}: {why}", path.display())))?;
    messages.insert(
        0,
        Message::info(format!(
            "Loading server configuration from {:?}. Other configuration command line flags and environment variables will be ignored if provided.",
            path.display().to_string()
        )),
    );
    Ok((settings, messages))
}

/// Reads a configuration file's text.
pub(crate) fn from_yaml(text: &str) -> Result<(Settings, Vec<Message>), String> {
    let mut settings = Settings::new(Source::File);
    let mut messages = Vec::new();
    settings.set_default("enable-grpc-gateway", Value::Bool(false));
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let root = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok((settings, messages)),
        Some(Yaml::Hash(h)) => h,
        Some(_) => return Err("the top level must be a map of flag names to values".into()),
    };
    for (k, v) in root {
        let key = scalar_text(&k).ok_or("keys must be flag names")?;
        match key.as_str() {
            "client-transport-security" => security(&mut settings, &key, v, CLIENT_TLS)?,
            "peer-transport-security" => security(&mut settings, &key, v, PEER_TLS)?,
            _ => match lookup(&key) {
                Some(spec) if !NOT_IN_FILE.contains(&spec.name) && spec.kind != Kind::Ignored => {
                    if let Some(value) = file_value(spec.name, spec.kind, &v)? {
                        settings.set(spec.name, value);
                    }
                }
                _ => messages.push(Message::warn(format!(
                    "unrecognized key {key:?} in the configuration file; ignoring it"
                ))),
            },
        }
    }
    Ok((settings, messages))
}

fn security(
    settings: &mut Settings,
    section: &str,
    v: Yaml,
    keys: &[(&str, &'static str)],
) -> Result<(), String> {
    let map = match v {
        Yaml::Null => return Ok(()),
        Yaml::Hash(h) => h,
        _ => return Err(format!("{section:?} must be a map")),
    };
    for (k, v) in map {
        let key =
            scalar_text(&k).ok_or_else(|| format!("{section:?} has a key that is not a name"))?;
        let Some(&(_, flag)) = keys.iter().find(|(k, _)| *k == key) else {
            return Err(format!(
                "{section:?} has no key {key:?} (known: cert-file, key-file, client-cert-auth, trusted-ca-file, auto-tls)"
            ));
        };
        let kind = lookup(flag).map(|f| f.kind).unwrap_or(Kind::Str);
        if let Some(value) = file_value(&format!("{section}.{key}"), kind, &v)? {
            settings.set(flag, value);
        }
    }
    Ok(())
}

/// A scalar as the string Go's YAML-to-JSON step would make of it for a
/// string field.
fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A YAML integer (a plain scalar too large for i64 arrives as `Real`).
fn integer(v: &Yaml) -> Option<i128> {
    match v {
        Yaml::Integer(n) => Some(i128::from(*n)),
        Yaml::Real(s) => s.parse::<u64>().ok().map(i128::from),
        _ => None,
    }
}

/// YAML 1.1 booleans, as the Go YAML library reads them.
fn boolean(v: &Yaml) -> Option<bool> {
    match v {
        Yaml::Boolean(b) => Some(*b),
        Yaml::String(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
            s => values::parse_bool(s),
        },
        _ => None,
    }
}

fn strings(v: &Yaml) -> Option<Vec<String>> {
    match v {
        Yaml::Array(items) => items.iter().map(scalar_text).collect(),
        other => scalar_text(other).map(|s| s.split(',').map(str::to_string).collect()),
    }
}

/// One key's value; `None` when the file leaves the default in place (a null,
/// or an empty URL string as etcd treats it).
fn file_value(key: &str, kind: Kind, v: &Yaml) -> Result<Option<Value>, String> {
    if matches!(v, Yaml::Null) {
        return Ok(None);
    }
    let wrong = |what: &str| format!("{key:?} must be {what}");
    let value = match kind {
        Kind::Str | Kind::Ignored => Value::Str(scalar_text(v).ok_or_else(|| wrong("a string"))?),
        Kind::Choice(valid) => {
            let s = scalar_text(v).ok_or_else(|| wrong("a string"))?;
            if s.is_empty() {
                return Ok(None);
            }
            // initial-cluster-state is checked with the other settings, with
            // etcd's message; proxy and discovery-fallback are checked here.
            if key != "initial-cluster-state" && !valid.contains(&s.as_str()) {
                return Err(format!(
                    "unexpected error setting up {key}: invalid value {s:?} (valid values: {})",
                    valid.join(", ")
                ));
            }
            Value::Str(s)
        }
        Kind::Bool => Value::Bool(boolean(v).ok_or_else(|| wrong("true or false"))?),
        Kind::Uint | Kind::Uint32 => {
            let max = if kind == Kind::Uint32 {
                i128::from(u32::MAX)
            } else {
                i128::from(u64::MAX)
            };
            let n = integer(v)
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| wrong("a non-negative integer"))?;
            Value::Uint(n as u64)
        }
        Kind::Int => {
            let n = integer(v)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| wrong("an integer"))?;
            Value::Int(n)
        }
        Kind::Duration => match v {
            Yaml::String(s) => {
                Value::Duration(values::parse_duration(s).map_err(|e| format!("{key:?}: {e}"))?)
            }
            _ => {
                let ns = integer(v)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| wrong("a non-negative integer of nanoseconds"))?;
                Value::Duration(Duration::from_nanos(ns))
            }
        },
        Kind::Urls | Kind::UrlsOrStar => {
            let parts = strings(v).ok_or_else(|| wrong("a comma-separated string of URLs"))?;
            let joined = parts.join(",");
            if joined.is_empty() {
                return Ok(None);
            }
            let exceptions: &[&str] = if kind == Kind::UrlsOrStar {
                &["*"]
            } else {
                &[]
            };
            let urls = values::parse_url_list(&joined, exceptions)
                .map_err(|e| format!("unexpected error setting up {key}: {e}"))?;
            Value::List(urls)
        }
        Kind::Strings | Kind::UniqueStrings => {
            let mut list = strings(v).ok_or_else(|| wrong("a list of strings"))?;
            if key == "host-whitelist" && list.concat().is_empty() {
                return Ok(None);
            }
            if kind == Kind::UniqueStrings {
                list.sort();
                list.dedup();
            }
            Value::List(list)
        }
    };
    Ok(Some(value))
}
