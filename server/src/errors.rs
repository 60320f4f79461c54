//! The one table of client-visible errors: etcd's exact message and gRPC
//! code for each (compat.md §3). Everything a client can see goes through
//! [`ApiError`]; the JSON gateway maps the same codes to HTTP statuses.

use cairn_engine::mvcc;
use tonic::{Code, Status};

/// An error a client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// The member was removed from the cluster.
    #[error("etcdserver: the member has been permanently removed from the cluster")]
    Removed,
    /// Anything else: an internal failure, reported as etcd reports them.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        use ApiError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | MemberBadUrls | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists
            | MemberExists
            | PeerUrlExists
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotLeader
            | BadLeaderTransferee
            | AuthNotEnabled => Code::FailedPrecondition,
            NoLeader
            | LeaderChanged
            | Stopped
            | Timeout
            | TimeoutDueToLeaderFail
            | Unhealthy
            | NotSupportedForLearner
            | Removed => Code::Unavailable,
            Corrupt => Code::DataLoss,
            PermissionDenied => Code::PermissionDenied,
            Internal(_) => Code::Unknown,
        }
    }

    /// An error another member answered, by its message (each message is
    /// one variant's); anything else is passed on as it came.
    pub fn from_status(s: &Status) -> ApiError {
        use ApiError::*;
        let known = [
            MemberNotFound,
            MemberNotLearner,
            LearnerNotReady,
            TooManyLearners,
            NotLeader,
            NoLeader,
            LeaderChanged,
            Timeout,
            TimeoutDueToLeaderFail,
            Stopped,
            LeaseNotFound,
            MemberExists,
            PeerUrlExists,
            MemberNotEnoughStarted,
            MemberBadUrls,
        ];
        known
            .into_iter()
            .find(|e| e.to_string() == s.message())
            .unwrap_or_else(|| Internal(s.message().to_string()))
    }

    pub fn status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }

    /// The HTTP status the gateway answers with for a gRPC code.
    pub fn http_status(code: Code) -> u16 {
        match code {
            Code::Ok => 200,
            Code::Cancelled => 408,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 412,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.status()
    }
}

impl From<mvcc::Error> for ApiError {
    fn from(e: mvcc::Error) -> ApiError {
        use mvcc::Error as E;
        match e {
            E::Compacted => ApiError::Compacted,
            E::FutureRevision => ApiError::FutureRevision,
            E::KeyNotFound => ApiError::KeyNotFound,
            E::LeaseNotFound => ApiError::LeaseNotFound,
            E::DuplicateKey => ApiError::DuplicateKey,
            E::TooManyOps => ApiError::TooManyOps,
            E::EmptyKey => ApiError::EmptyKey,
            E::ValueProvided => ApiError::ValueProvided,
            E::LeaseProvided => ApiError::LeaseProvided,
            E::Closed => ApiError::Stopped,
            e => ApiError::Internal(format!("etcdserver: {e}")),
        }
    }
}

impl From<cairn_raftnode::Error> for ApiError {
    fn from(e: cairn_raftnode::Error) -> ApiError {
        use cairn_raftnode::Error as E;
        match e {
            E::NoLeader => ApiError::NoLeader,
            E::LeaderChanged => ApiError::LeaderChanged,
            E::Timeout => ApiError::Timeout,
            E::TimeoutLeaderFail => ApiError::TimeoutDueToLeaderFail,
            E::Stopped => ApiError::Stopped,
            E::Removed => ApiError::Removed,
            E::MemberNotFound => ApiError::MemberNotFound,
            E::MemberExists => ApiError::MemberExists,
            E::PeerUrlExists => ApiError::PeerUrlExists,
            E::InvalidUrls => ApiError::MemberBadUrls,
            E::NotLearner => ApiError::MemberNotLearner,
            E::LearnerNotReady => ApiError::LearnerNotReady,
            E::TooManyLearners => ApiError::TooManyLearners,
            E::NotEnoughStarted => ApiError::MemberNotEnoughStarted,
            E::NotLeader => ApiError::NotLeader,
            E::BadTransferee => ApiError::BadLeaderTransferee,
            E::Storage(s) => ApiError::Internal(s),
        }
    }
}

/// grpc-go's words for a request over the server's receive limit
/// (max-request-bytes + 512 KiB): `grpc: received message larger than max
/// (N vs. M)`, ResourceExhausted, which clients and scripts see from etcd.
/// tonic refuses such a request with its own text and OutOfRange.
fn as_grpc_go(s: &Status) -> Option<Status> {
    if s.code() != Code::OutOfRange {
        return None;
    }
    let rest = s
        .message()
        .strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(Status::resource_exhausted(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    )))
}

/// Rewrites a gRPC answer tonic gave in its own words (a status in the
/// headers: the call failed before any message) to grpc-go's, as etcd
/// answers.
pub fn grpc_go_words(headers: &mut axum::http::HeaderMap) {
    if let Some(go) = Status::from_header_map(headers).and_then(|s| as_grpc_go(&s)) {
        let _ = go.add_header(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_are_etcds() {
        let cases = [
            (
                ApiError::Compacted,
                "etcdserver: mvcc: required revision has been compacted",
                Code::OutOfRange,
            ),
            (
                ApiError::NoSpace,
                "etcdserver: mvcc: database space exceeded",
                Code::ResourceExhausted,
            ),
            (
                ApiError::PeerUrlExists,
                "etcdserver: Peer URLs already exists",
                Code::FailedPrecondition,
            ),
            (
                ApiError::MemberExists,
                "etcdserver: member ID already exist",
                Code::FailedPrecondition,
            ),
            (
                ApiError::NoLeader,
                "etcdserver: no leader",
                Code::Unavailable,
            ),
            (
                ApiError::LeaseNotFound,
                "etcdserver: requested lease not found",
                Code::NotFound,
            ),
            (
                ApiError::DuplicateKey,
                "etcdserver: duplicate key given in txn request",
                Code::InvalidArgument,
            ),
        ];
        for (e, msg, code) in cases {
            let s = e.status();
            assert_eq!((s.message(), s.code()), (msg, code));
        }
        assert_eq!(ApiError::http_status(Code::FailedPrecondition), 412);
        let tonic_words = Status::out_of_range(
            "Error, decoded message length too large: found 600007 bytes, the limit is: 525312 bytes",
        );
        let go = as_grpc_go(&tonic_words).unwrap();
        assert_eq!(
            (go.code(), go.message()),
            (
                Code::ResourceExhausted,
                "grpc: received message larger than max (600007 vs. 525312)"
            )
        );
        assert!(as_grpc_go(&ApiError::Compacted.status()).is_none());
        assert_eq!(ApiError::http_status(Code::ResourceExhausted), 429);
    }
}
