//! What the raft node answers when a request cannot be carried out.
//!
//! The messages are etcd's, word for word, so the server can hand them to
//! clients unchanged (its error table maps each to a gRPC code).

/// A request the node could not carry out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No leader is known, so the request was not proposed.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership changed and the proposal or read was lost with it: the
    /// request was certainly not applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// No outcome within the request timeout; the request may still apply.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The request timed out and leadership changed meanwhile.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutLeaderFail,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// This member was removed from the cluster.
    #[error("etcdserver: the member has been permanently removed from the cluster")]
    Removed,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    InvalidUrls,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// The node's storage failed; it stops.
    #[error("raft node storage: {0}")]
    Storage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<cairn_wal::WalError> for Error {
    fn from(e: cairn_wal::WalError) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        match e {
            raft::Error::ProposalDropped => Error::NoLeader,
            e => Error::Storage(e.to_string()),
        }
    }
}
