//! What a failed etcd request means for sending it again: whether it
//! certainly did not reach etcd's log (safe to send anywhere), may have
//! (a write must not be repeated), or is etcd's final answer.

use std::error::Error as _;

/// The message of etcd's refusal of a request while its member knows no
/// leader (with "require leader", before the request is looked at).
const NO_LEADER: &str = "etcdserver: no leader";
/// The message of Raft dropping a proposal (a follower without a leader):
/// the write never entered the log.
const PROPOSAL_DROPPED: &str = "raft proposal dropped";
/// The message of etcd's answer to a read whose leader changed meanwhile.
const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// How one failed attempt of a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection could be made: the request was never sent. The
    /// member is down.
    NotSent,
    /// The member refused the request because it has no leader (an
    /// election is going on): it was not applied. The member is up.
    NoLeader,
    /// The member answered a read with "leader changed": safe to read
    /// again, not proof that a write was not applied.
    LeaderChanged,
    /// The request was sent and its fate is unknown (the connection was
    /// lost, or etcd gave up waiting for its proposal): a read may be sent
    /// again, a write may not.
    Lost,
    /// etcd's answer to the request itself (out of range, permission
    /// denied, an invalid request...): final.
    Answer,
}

impl Failure {
    /// True if the member should leave the rotation until it answers a
    /// probe again.
    pub(super) fn member_down(self) -> bool {
        matches!(self, Failure::NotSent | Failure::Lost)
    }
}

/// How `error` failed (see [`Failure`]).
pub(super) fn classify(error: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => {
            if has_connect_error(status) {
                return Failure::NotSent;
            }
            let message = status.message();
            if message.contains(NO_LEADER) || message.contains(PROPOSAL_DROPPED) {
                return Failure::NoLeader;
            }
            if message.contains(LEADER_CHANGED) {
                return Failure::LeaderChanged;
            }
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::Unknown
                | tonic::Code::Internal => Failure::Lost,
                _ => Failure::Answer,
            }
        }
        // Made before a request (building the channel): nothing was sent.
        E::TransportError(_) | E::EndpointError(_) => Failure::NotSent,
        E::IoError(_) | E::WatchError(_) => Failure::Lost,
        _ => Failure::Answer,
    }
}

/// True if the status comes from failing to connect (the connector's error
/// is in its source chain): the request never left.
fn has_connect_error(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn refusals_and_ambiguous_failures() {
        assert_eq!(
            classify(&status(tonic::Code::Unavailable, "etcdserver: no leader")),
            Failure::NoLeader
        );
        assert_eq!(
            classify(&status(tonic::Code::Unknown, "raft proposal dropped")),
            Failure::NoLeader
        );
        assert_eq!(
            classify(&status(
                tonic::Code::Unavailable,
                "etcdserver: leader changed"
            )),
            Failure::LeaderChanged
        );
        // A timeout or a lost connection leaves a write's fate open.
        assert_eq!(
            classify(&status(
                tonic::Code::Unavailable,
                "etcdserver: request timed out"
            )),
            Failure::Lost
        );
        assert_eq!(
            classify(&status(tonic::Code::Unknown, "h2 protocol error")),
            Failure::Lost
        );
        // A message alone does not make a connect error.
        assert_eq!(
            classify(&status(tonic::Code::Unavailable, "tcp connect error")),
            Failure::Lost
        );
        assert_eq!(
            classify(&status(tonic::Code::OutOfRange, "compacted")),
            Failure::Answer
        );
    }

    #[test]
    fn connect_errors_were_not_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = tonic::ConnectError(Box::new(refused));
        let status = tonic::Status::from_error(Box::new(connect));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            classify(&etcd_client::Error::GRpcStatus(status)),
            Failure::NotSent
        );
    }
}
