//! Compiles cairn's .proto files with protox (pure Rust; no system protoc) into
//! prost messages, tonic servers and clients, and pbjson serde impls.
//!
//! Two textual passes run over the generated code, each checked to have
//! matched (a generator upgrade that changes the text fails the build rather
//! than silently dropping the rule):
//!
//! * bytes fields deserialize through `crate::json::Base64Bytes` (standard
//!   alphabet, padding required) instead of pbjson's lenient decoder, which
//!   also takes unpadded and URL-safe input that etcd's gateway rejects;
//! * prost's snake-casing of `peerURLs` / `clientURLs` (`peer_ur_ls`) becomes
//!   `peer_urls` / `client_urls` in Rust; wire and JSON names are untouched.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/etcdserverpb/internal.proto",
    "proto/leasepb/lease.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
    "proto/grpc/health/v1/health.proto",
];

/// Packages given serde impls (the JSON gateway's); gRPC's health package has
/// no gateway path.
const PACKAGES: &[&str] = &[
    "mvccpb",
    "authpb",
    "etcdserverpb",
    "leasepb",
    "v3lockpb",
    "v3electionpb",
];

/// Rust field renames applied to the prost and pbjson output alike.
const FIELD_RENAMES: &[(&str, &str)] =
    &[("peer_ur_ls", "peer_urls"), ("client_ur_ls", "client_urls")];

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    for f in PROTOS {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let encoded = descriptors.encode_to_vec();

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Clients are built over any tonic transport (`KvClient::new(channel)`);
        // `connect()` would pull tonic's transport stack into this crate.
        .build_transport(false)
        // Small per-call buffers (see `codec`).
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds(descriptors)?;

    let serde = pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        // etcd's gateway ignores JSON fields it does not know.
        .ignore_unknown_fields()
        .generate(
            &PACKAGES.iter().map(|p| format!(".{p}")).collect::<Vec<_>>(),
            |_| Ok(Vec::new()),
        )?;
    for (package, code) in serde {
        let code = String::from_utf8(code)?;
        let code = redirect_bytes_decoders(&code, &format!("{package}.serde.rs"))?;
        std::fs::write(out_dir.join(format!("{package}.serde.rs")), code)?;
    }

    let mut renamed = [0usize; FIELD_RENAMES.len()];
    for package in PACKAGES {
        for suffix in ["rs", "serde.rs"] {
            let path = out_dir.join(format!("{package}.{suffix}"));
            rename_fields(&path, &mut renamed)?;
        }
    }
    for ((from, _), n) in FIELD_RENAMES.iter().zip(renamed) {
        if n == 0 {
            return Err(format!("generated code no longer contains `{from}`").into());
        }
    }
    Ok(())
}

/// Points every bytes-field decoder at cairn's strict one; fails if one is
/// left behind (a pbjson upgrade that spells it differently).
fn redirect_bytes_decoders(code: &str, what: &str) -> Result<String, BoxError> {
    let code = code.replace(
        "::pbjson::private::BytesDeserialize<",
        "crate::json::Base64Bytes<",
    );
    if code.contains("BytesDeserialize") || code.contains("base64::decode") {
        return Err(format!("{what}: a bytes decoder was not redirected").into());
    }
    Ok(code)
}

fn rename_fields(path: &Path, counts: &mut [usize]) -> Result<(), BoxError> {
    let mut code = std::fs::read_to_string(path)?;
    for ((from, to), n) in FIELD_RENAMES.iter().zip(counts.iter_mut()) {
        *n += code.matches(from).count();
        code = code.replace(from, to);
    }
    std::fs::write(path, code)?;
    Ok(())
}
