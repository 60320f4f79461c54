//! # cairn-proto — etcd's v3 wire API
//!
//! Generated Rust types for cairn's own `.proto` files, which state etcd's v3
//! API field for field (names, numbers, types), so that every etcd client
//! speaks to cairn unchanged.
//!
//! ## Invariants
//!
//! * A message's field numbers and types never differ from etcd's; tests pin
//!   the wire bytes.
//! * Built by `build.rs` with `protox`, without a system `protoc`.
//!
//! ## Never
//!
//! * Holds no logic: conversions and semantics live in the server.

/// etcd's `mvccpb` package: stored key-values and watch events.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

#[cfg(test)]
mod tests {
    use super::mvccpb::{Event, KeyValue, event::EventType};
    use prost::Message;

    #[test]
    fn key_value_has_etcds_wire_bytes() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: b"bar".to_vec(),
            lease: 7,
        };
        let bytes = kv.encode_to_vec();
        assert_eq!(
            bytes,
            [
                0x0a, 3, b'f', b'o', b'o', // 1: key
                0x10, 2, // 2: create_revision
                0x18, 3, // 3: mod_revision
                0x20, 1, // 4: version
                0x2a, 3, b'b', b'a', b'r', // 5: value
                0x30, 7, // 6: lease
            ]
        );
        assert_eq!(KeyValue::decode(&bytes[..]).unwrap(), kv);
    }

    #[test]
    fn event_types_and_fields_match_etcd() {
        let ev = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        };
        assert_eq!(ev.encode_to_vec(), [0x08, 1, 0x12, 3, 0x0a, 1, b'k']);
        assert_eq!(EventType::Put as i32, 0);
    }
}
