//! raft-rs logs through `slog`; this drain hands its records to `tracing`,
//! so the node's logs come out with the server's (structured JSON).

use slog::{Drain, KV, Level, OwnedKVList, Record, Serializer};

/// A `slog` drain that re-emits records as `tracing` events.
struct ToTracing;

/// Collects a record's key-value pairs as `key=value` text.
struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={val}");
        Ok(())
    }
}

impl Drain for ToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        let f = fields.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", fields = %f, "{msg}"),
            Level::Warning => tracing::warn!(target: "raft", fields = %f, "{msg}"),
            Level::Info => tracing::info!(target: "raft", fields = %f, "{msg}"),
            Level::Debug => tracing::debug!(target: "raft", fields = %f, "{msg}"),
            Level::Trace => tracing::trace!(target: "raft", fields = %f, "{msg}"),
        }
        Ok(())
    }
}

/// The logger raft-rs is given.
pub fn logger(member_id: u64) -> slog::Logger {
    slog::Logger::root(
        ToTracing.fuse(),
        slog::o!("raft_id" => format!("{member_id:x}")),
    )
}
