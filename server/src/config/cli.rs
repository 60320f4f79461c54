//! The command line as Go's `flag` package reads it for etcd, then the
//! `ETCD_*` environment as etcd's `flags.SetFlagsFromEnv` applies it.
//!
//! Go flag syntax: `-flag` or `--flag`; `-flag=value` or `-flag value`;
//! booleans stand alone or take `=value` (never a separate `value`); parsing
//! stops at the first argument that is not a flag, or after `--`; `-h` and
//! `-help` ask for help.

use super::flags::{FLAGS, FlagSpec, Kind, Settings, Source, lookup};
use super::{ConfigError, Message};

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Args {
    Help,
    Flags {
        settings: Settings,
        messages: Vec<Message>,
    },
}

/// Reads the arguments (without the program name).
pub(crate) fn parse_args(args: &[String]) -> Result<Args, ConfigError> {
    let mut settings = Settings::new(Source::CommandLine);
    let mut messages = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        i += 1;
        let dashes = if arg.starts_with("--") { 2 } else { 1 };
        if arg == "--" {
            break;
        }
        let body = &arg[dashes..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::usage(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(spec) = lookup(name) else {
            if name == "help" || name == "h" {
                return Ok(Args::Help);
            }
            return Err(ConfigError::usage(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        let text = match (inline, spec.kind.is_bool()) {
            (Some(v), _) => v.to_string(),
            (None, true) => "true".to_string(),
            (None, false) => match args.get(i) {
                Some(next) => {
                    i += 1;
                    next.clone()
                }
                None => {
                    return Err(ConfigError::usage(format!(
                        "flag needs an argument: -{name}"
                    )));
                }
            },
        };
        if spec.kind == Kind::Ignored {
            messages.push(ignored_flag_warning(spec));
            continue;
        }
        let value = spec.kind.parse(&text).map_err(|why| {
            ConfigError::usage(if spec.kind == Kind::Bool {
                format!("invalid boolean value {text:?} for -{name}: {why}")
            } else {
                format!("invalid value {text:?} for flag -{name}: {why}")
            })
        })?;
        settings.set(spec.name, value);
    }
    // Go's flag parsing stops at the first non-flag; etcd refuses anything left.
    if let Some(extra) = args.get(i) {
        return Err(ConfigError::invalid(format!(
            "'{extra}' is not a valid flag"
        )));
    }
    Ok(Args::Flags { settings, messages })
}

fn ignored_flag_warning(spec: &FlagSpec) -> Message {
    Message::warn(format!(
        "flag \"-{}\" is no longer supported - ignoring.",
        spec.name
    ))
}

/// etcd's `SetFlagsFromEnv`: each flag not set on the command line takes its
/// `ETCD_*` variable when that is not empty; a variable for a flag that *was*
/// set on the command line is fatal; other `ETCD_*` variables draw a warning.
/// `env` is in the process environment's order.
pub(crate) fn apply_env(
    settings: &mut Settings,
    env: &[(String, String)],
    messages: &mut Vec<Message>,
) -> Result<(), ConfigError> {
    let on_command_line = settings.set_names().clone();
    let lookup_env = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut used = Vec::new();
    // Go's VisitAll goes through the flags in lexical order.
    let mut specs: Vec<&FlagSpec> = FLAGS.iter().collect();
    specs.sort_by_key(|f| f.name);
    for spec in specs {
        let key = spec.env_key();
        if on_command_line.contains(spec.name) {
            continue;
        }
        let Some(val) = lookup_env(&key).filter(|v| !v.is_empty()) else {
            continue;
        };
        used.push(key.clone());
        if spec.kind == Kind::Ignored {
            messages.push(ignored_flag_warning(spec));
        } else {
            let value = spec.kind.parse(val).map_err(|why| {
                ConfigError::invalid(format!("invalid value {val:?} for {key}: {why}"))
            })?;
            settings.set(spec.name, value);
        }
        messages.push(Message::info(format!(
            "recognized and used environment variable {key}={val}"
        )));
    }
    for (key, val) in env {
        if used.contains(key) {
            continue;
        }
        if let Some(spec) = FLAGS.iter().find(|f| &f.env_key() == key)
            && on_command_line.contains(spec.name)
        {
            return Err(ConfigError::fatal(format!(
                "conflicting environment variable {key:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            )));
        }
        if key.starts_with("ETCD_") {
            messages.push(Message::warn(format!(
                "unrecognized environment variable {key}={val}"
            )));
        }
    }
    Ok(())
}
