//! Cluster membership as the raft node keeps it: each member's id, name and
//! URLs, learners, and the ids removed for good.
//!
//! It changes only by applying committed entries, so every member holds the
//! same list at the same index. It is saved with every snapshot marker in the
//! WAL and sent with every raft snapshot, and at restart the entries after
//! the marker are applied again, so it is never lost.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A member of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published it.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// Every member, and the ids removed for good.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

impl Membership {
    pub fn new(members: impl IntoIterator<Item = Member>) -> Membership {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            removed: BTreeSet::new(),
        }
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    pub fn learners(&self) -> usize {
        self.members.values().filter(|m| m.is_learner).count()
    }

    /// Checks an addition as etcd does before proposing it.
    pub fn check_add(&self, m: &Member) -> Result<()> {
        if self.members.contains_key(&m.id) || self.removed.contains(&m.id) {
            return Err(Error::MemberExists);
        }
        let taken: BTreeSet<&str> = self
            .members
            .values()
            .flat_map(|x| x.peer_urls.iter().map(String::as_str))
            .collect();
        if m.peer_urls.iter().any(|u| taken.contains(u.as_str())) {
            return Err(Error::PeerUrlExists);
        }
        Ok(())
    }

    /// Checks an update of `id`'s peer URLs.
    pub fn check_update(&self, id: u64, urls: &[String]) -> Result<()> {
        if !self.members.contains_key(&id) {
            return Err(Error::MemberNotFound);
        }
        let taken: BTreeSet<&str> = self
            .members
            .values()
            .filter(|x| x.id != id)
            .flat_map(|x| x.peer_urls.iter().map(String::as_str))
            .collect();
        if urls.iter().any(|u| taken.contains(u.as_str())) {
            return Err(Error::PeerUrlExists);
        }
        Ok(())
    }

    /// Applies an addition (or, for an existing learner, a promotion).
    pub fn add(&mut self, m: Member) {
        self.members.insert(m.id, m);
    }

    pub fn promote(&mut self, id: u64) {
        if let Some(m) = self.members.get_mut(&id) {
            m.is_learner = false;
        }
    }

    pub fn remove(&mut self, id: u64) {
        self.members.remove(&id);
        self.removed.insert(id);
    }

    /// Applies new attributes (name, client URLs) or peer URLs.
    pub fn update(&mut self, m: &Member) {
        if let Some(cur) = self.members.get_mut(&m.id) {
            if !m.peer_urls.is_empty() {
                cur.peer_urls = m.peer_urls.clone();
            }
            if !m.name.is_empty() {
                cur.name = m.name.clone();
            }
            if !m.client_urls.is_empty() {
                cur.client_urls = m.client_urls.clone();
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("membership serializes")
    }

    pub fn decode(b: &[u8]) -> Result<Membership> {
        serde_json::from_slice(b).map_err(|e| Error::Storage(format!("bad membership record: {e}")))
    }
}

/// `host:port` of a URL such as `http://127.0.0.1:2380`; `None` if it has
/// no scheme, host or port.
pub fn url_host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let hp = rest.split('/').next()?;
    let (host, port) = hp.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(hp)
}

/// Whether every URL is `http(s)://host:port`.
pub fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|u| {
            (u.starts_with("http://") || u.starts_with("https://")) && url_host_port(u).is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, url: &str) -> Member {
        Member {
            id,
            peer_urls: vec![url.into()],
            ..Member::default()
        }
    }

    #[test]
    fn additions_are_checked_against_ids_urls_and_removed_members() {
        let mut ms = Membership::new([m(1, "http://a:1"), m(2, "http://b:1")]);
        assert_eq!(ms.check_add(&m(1, "http://c:1")), Err(Error::MemberExists));
        assert_eq!(ms.check_add(&m(3, "http://b:1")), Err(Error::PeerUrlExists));
        assert_eq!(ms.check_add(&m(3, "http://c:1")), Ok(()));
        ms.remove(2);
        assert_eq!(ms.check_add(&m(2, "http://d:1")), Err(Error::MemberExists));
        assert!(ms.is_removed(2));
        let back = Membership::decode(&ms.encode()).unwrap();
        assert_eq!(back, ms);
    }

    #[test]
    fn urls_need_a_scheme_host_and_port() {
        assert_eq!(
            url_host_port("http://127.0.0.1:2380"),
            Some("127.0.0.1:2380")
        );
        assert_eq!(url_host_port("https://[::1]:2380/x"), Some("[::1]:2380"));
        assert!(valid_peer_urls(&["http://h:1".into()]));
        assert!(!valid_peer_urls(&["h:1".into()]));
        assert!(!valid_peer_urls(&["http://h".into()]));
        assert!(!valid_peer_urls(&[]));
    }
}
