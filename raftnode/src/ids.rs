//! Member and cluster ids, derived the way etcd derives them.
//!
//! * Member id: the first 8 bytes, big-endian, of SHA-1 over the member's peer
//!   URLs sorted and concatenated, then the cluster token, then — for a member
//!   added at runtime — the decimal Unix time of the addition.
//! * Cluster id: the first 8 bytes, big-endian, of SHA-1 over the sorted member
//!   ids, each as 8 big-endian bytes.
//!
//! Ids print as unpadded lower-case hex (`8e9e05c52164694d`).

use sha1::{Digest, Sha1};

fn first_8_be(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// The id of a member with these peer URLs in a cluster created with `token`;
/// `added_at` is the Unix time of a runtime addition (`None` for the members of
/// the initial cluster).
pub fn member_id<S: AsRef<str>>(peer_urls: &[S], token: &str, added_at: Option<i64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    if let Some(t) = added_at {
        h.update(t.to_string().as_bytes());
    }
    first_8_be(&h.finalize())
}

/// The id of a cluster made of these members.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_8_be(&h.finalize())
}

/// An id as etcd prints it.
pub fn format_id(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_member_gets_etcds_ids() {
        let m = member_id(&["http://127.0.0.1:23801"], "etcd-cluster", None);
        assert_eq!(format_id(m), "bdae9bbc11dd390d");
        let c = cluster_id(&[m]);
        assert_eq!(format_id(c), "d1cfaf999eb97a2a");
        assert_eq!(c, 15118495548433857066);
    }

    #[test]
    fn etcds_default_member_has_its_well_known_ids() {
        let m = member_id(&["http://localhost:2380"], "etcd-cluster", None);
        assert_eq!(format_id(m), "8e9e05c52164694d");
        assert_eq!(format_id(cluster_id(&[m])), "cdf818194e3a8c32");
    }

    #[test]
    fn url_order_does_not_matter_but_token_and_time_do() {
        let a = member_id(&["http://a:1", "http://b:2"], "t", None);
        let b = member_id(&["http://b:2", "http://a:1"], "t", None);
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:1", "http://b:2"], "u", None));
        assert_ne!(
            a,
            member_id(&["http://a:1", "http://b:2"], "t", Some(1_700_000_000))
        );
        assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
    }
}
