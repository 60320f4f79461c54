//! `--help` and `--version`.

use std::fmt::Write;

use super::ETCD_API_VERSION;
use super::flags::{FLAGS, Group, Kind};

const USAGE: &str = "\
Usage:

  cairn [flags]
    Start a cairn server (a drop-in etcd v3 server).

  cairn --version
    Show the version of cairn.

  cairn -h | --help
    Show this help.

  cairn --config-file <path>
    Read the configuration from a YAML file; every other flag and ETCD_*
    environment variable is then ignored.

Flags take one or two dashes: -name x, --name x, --name=x. A boolean flag
stands alone or takes =true / =false. Every flag can also be set through an
environment variable: --foo-bar as ETCD_FOO_BAR (setting both is an error).
Durations are Go durations (100ms, 5s, 2h45m).
";

/// The text `--help` prints: the usage, then every flag by section with its
/// default.
pub fn help_text() -> String {
    let mut out = String::from(USAGE);
    let mut group = None;
    for f in FLAGS.iter().filter(|f| f.group != Group::Hidden) {
        if group != Some(f.group) {
            group = Some(f.group);
            let _ = write!(out, "\n{}:\n", f.group.title());
        }
        let default = match f.name {
            "data-dir" => "${name}.etcd",
            _ => f.default,
        };
        let _ = match f.kind {
            Kind::Uint | Kind::Uint32 | Kind::Int => {
                writeln!(out, "  --{} {default}", f.name)
            }
            _ => writeln!(out, "  --{} '{default}'", f.name),
        };
        let _ = writeln!(out, "    {}", f.help);
    }
    out.push_str(
        "\nCAUTIOUS with unsafe flag! It may break the guarantees given by the consensus protocol!\n",
    );
    out
}

/// What `--version` prints:
///
/// ```text
/// cairn Version: 0.1.0
/// etcd API Version: 3.4.23
/// Git SHA: <CAIRN_GIT_SHA at build time, or "Not provided">
/// Rust Version: <CAIRN_RUSTC_VERSION at build time, or "unknown (rust-version ≥ 1.95)">
/// OS/Arch: linux/amd64
/// ```
pub fn version_text() -> String {
    let git_sha =
        option_env!("CAIRN_GIT_SHA").unwrap_or("Not provided (set CAIRN_GIT_SHA when building)");
    let rust = match option_env!("CAIRN_RUSTC_VERSION") {
        Some(v) => v.to_string(),
        None => format!(
            "unknown (rust-version >= {})",
            env!("CARGO_PKG_RUST_VERSION")
        ),
    };
    format!(
        "cairn Version: {}\netcd API Version: {ETCD_API_VERSION}\nGit SHA: {git_sha}\nRust Version: {rust}\nOS/Arch: {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        go_arch(),
    )
}

/// The architecture under Go's name for it, as etcd prints it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        other => other,
    }
}
