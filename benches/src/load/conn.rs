//! Endpoints and connections: `host:port` or `http://host:port` endpoints,
//! `--conns` gRPC connections spread over them round-robin (every client
//! handle is a clone of one of these; see `transport` for what a connection
//! is), and `--target-leader`.

use std::time::Duration;

use anyhow::Context as _;
use cairn_proto::etcdserverpb::{StatusRequest, maintenance_client::MaintenanceClient};
use tonic::codegen::http::uri::Authority;

pub use super::transport::Conn;

/// `host:port` of an endpoint given with or without `http://`.
pub fn host_port(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    anyhow::ensure!(
        !e.starts_with("https://"),
        "{endpoint}: TLS endpoints are not supported"
    );
    let hp = e.strip_prefix("http://").unwrap_or(e);
    anyhow::ensure!(
        !hp.is_empty() && !hp.contains('/') && hp.contains(':'),
        "{endpoint}: an endpoint is host:port or http://host:port"
    );
    Ok(hp.to_string())
}

/// One gRPC connection (HTTP/2) to `host:port`, connected now: an endpoint
/// nobody listens on is an error here, within the connect timeout. Once
/// made, it reconnects whenever it is lost (see `transport`).
pub async fn connect(host_port: &str) -> anyhow::Result<Conn> {
    let authority: Authority = host_port
        .parse()
        .with_context(|| format!("{host_port}: not a host:port"))?;
    // Watch fan-out streams many events to one connection.
    let settings = super::transport::builder(1 << 20, 16 << 20);
    let conn = Conn::dial(host_port.to_string(), authority, settings);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after 5 s")))
        .with_context(|| format!("cannot connect to {host_port}"))
}

/// `conns` connections, round-robin over `endpoints` (`host:port`).
pub async fn connections(endpoints: &[String], conns: usize) -> anyhow::Result<Vec<Conn>> {
    anyhow::ensure!(conns >= 1, "--conns must be at least 1");
    let mut out = Vec::with_capacity(conns);
    for i in 0..conns {
        out.push(connect(&endpoints[i % endpoints.len()]).await?);
    }
    Ok(out)
}

/// The endpoint among `endpoints` whose member is the leader, by asking
/// each for its Maintenance.Status.
pub async fn leader(endpoints: &[String]) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for e in endpoints {
        let mut m = MaintenanceClient::new(connect(e).await?);
        let s = m
            .status(StatusRequest {})
            .await
            .with_context(|| format!("Maintenance.Status of {e}"))?
            .into_inner();
        let member = s.header.map_or(0, |h| h.member_id);
        if s.leader != 0 && s.leader == member {
            return Ok(e.clone());
        }
        seen.push(format!("{e} (member {member:x}, leader {:x})", s.leader));
    }
    anyhow::bail!("no leader among the endpoints: {}", seen.join(", "))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn endpoints_are_taken_with_or_without_a_scheme() {
        assert_eq!(host_port("127.0.0.1:2379").unwrap(), "127.0.0.1:2379");
        assert_eq!(
            host_port("http://127.0.0.1:2379/").unwrap(),
            "127.0.0.1:2379"
        );
        assert!(host_port("https://127.0.0.1:2379").is_err());
        assert!(host_port("localhost").is_err());
    }
}
