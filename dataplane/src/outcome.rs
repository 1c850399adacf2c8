//! How an attempt ended: the one vocabulary shared by the fallback loop, the breaker, the
//! telemetry counters, metrics labels and access logs.
//!
//! Decisions are made on the variant; [`Outcome::as_str`] is only ever written out (a metrics
//! label, a log field), never compared.

use crate::health::interval::Class;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The reply (or the whole stream) arrived.
    Ok,
    /// The provider refused the request itself; every endpoint would.
    BadRequest,
    /// The provider's safety filter refused.
    ContentFiltered,
    /// The caller went away before the reply ended.
    ClientCancelled,
    /// The provider is out of capacity for us (429, 529, an overloaded event).
    Throttled,
    /// No first byte, first token or whole reply within the attempt's bound, or the deadline.
    Timeout,
    /// The connection broke.
    Reset,
    /// The connection could not be made.
    ConnectError,
    /// The provider sent an error event inside a stream.
    StreamError,
    /// The stream ended before it was complete.
    Truncated,
    /// The reply is not a well-formed reply of its protocol.
    Malformed,
    /// The provider answered an HTTP error status (other than throttling).
    Status(Status),
    /// This endpoint has no credential to send with.
    NoCredentials,
    /// The endpoint's credential source failed (token exchange, STS).
    Credentials,
    /// This endpoint's wire cannot carry the request.
    UnsupportedInput,
    /// The sidecar could not build the request (a bad URL from config, a signing error).
    Internal,
    /// The shutdown grace period ended while the stream was open.
    Shutdown,
    /// Not sent: the endpoint is outside the feature's data boundary.
    BoundaryRefused,
    /// Not sent: the retry budget is spent and the endpoint is failing.
    SkippedRetryBudget,
    /// Not raced: the feature's hedge bound is full.
    HedgeRefused,
    /// Raced as a hedge.
    HedgeStarted,
    /// Raced as a hedge and lost to the other attempt.
    HedgeLost,
}

/// The HTTP error statuses a provider answers with, as metrics tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    S400,
    S401,
    S403,
    S404,
    S408,
    S500,
    S502,
    S503,
    S504,
    Other4xx,
    Other5xx,
}

impl Outcome {
    /// The outcome of an HTTP error reply.
    pub fn of_status(status: http::StatusCode) -> Outcome {
        Outcome::Status(match status.as_u16() {
            429 | 529 => return Outcome::Throttled,
            400 => Status::S400,
            401 => Status::S401,
            403 => Status::S403,
            404 => Status::S404,
            408 => Status::S408,
            500 => Status::S500,
            502 => Status::S502,
            503 => Status::S503,
            504 => Status::S504,
            _ if status.is_client_error() => Status::Other4xx,
            _ => Status::Other5xx,
        })
    }

    /// The metrics label and access-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::ContentFiltered => "content_filtered",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::Throttled => "throttled",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::ConnectError => "connect_error",
            Outcome::StreamError => "stream_error",
            Outcome::Truncated => "truncated",
            Outcome::Malformed => "malformed",
            Outcome::Status(s) => match s {
                Status::S400 => "status_400",
                Status::S401 => "status_401",
                Status::S403 => "status_403",
                Status::S404 => "status_404",
                Status::S408 => "status_408",
                Status::S500 => "status_500",
                Status::S502 => "status_502",
                Status::S503 => "status_503",
                Status::S504 => "status_504",
                Status::Other4xx => "status_4xx",
                Status::Other5xx => "status_5xx",
            },
            Outcome::NoCredentials => "no_credentials",
            Outcome::Credentials => "credentials",
            Outcome::UnsupportedInput => "unsupported_input",
            Outcome::Internal => "internal",
            Outcome::Shutdown => "shutdown",
            Outcome::BoundaryRefused => "boundary_refused",
            Outcome::SkippedRetryBudget => "skipped_retry_budget",
            Outcome::HedgeRefused => "hedge_refused",
            Outcome::HedgeStarted => "hedge_started",
            Outcome::HedgeLost => "hedge_lost",
        }
    }

    /// The telemetry counter an attempt that ended so is reported under.
    pub fn class(self) -> Class {
        match self {
            Outcome::Ok => Class::Ok,
            Outcome::Throttled => Class::Throttled,
            Outcome::Timeout | Outcome::Status(Status::S408 | Status::S504) => Class::Timeout,
            Outcome::Reset | Outcome::ConnectError | Outcome::StreamError => Class::Reset,
            Outcome::ClientCancelled => Class::ClientCancelled,
            Outcome::BadRequest | Outcome::ContentFiltered => Class::BadRequest,
            _ => Class::ServerError,
        }
    }

    /// Whether a committed attempt that ended so counts against its endpoint: the caller's own
    /// faults and successes do not.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::BadRequest | Outcome::ContentFiltered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn statuses_map_to_the_labels_and_counters_the_fleet_view_reads() {
        let cases = [
            (429, "throttled", Class::Throttled),
            (529, "throttled", Class::Throttled),
            (408, "status_408", Class::Timeout),
            (504, "status_504", Class::Timeout),
            (503, "status_503", Class::ServerError),
            (418, "status_4xx", Class::ServerError),
            (599, "status_5xx", Class::ServerError),
        ];
        for (code, label, class) in cases {
            let o = Outcome::of_status(StatusCode::from_u16(code).unwrap());
            assert_eq!((o.as_str(), o.class()), (label, class), "{code}");
        }
        assert_eq!(Outcome::StreamError.class(), Class::Reset);
        assert!(!Outcome::ContentFiltered.is_failure() && Outcome::Truncated.is_failure());
    }
}
