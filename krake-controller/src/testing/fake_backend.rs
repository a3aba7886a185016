//! What the in-process fakes of metrics backends ([`FakeKsql`](super::ksql::FakeKsql),
//! [`FakeInflux`](super::influx::FakeInflux)) share: the log of the
//! requests they got and what they are told to do ([`Behaviour`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// One request a fake got.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The path and query, such as `/api/v2/query?org=krake`.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// The value of the header `name`, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// What a fake does with the requests it gets (each is recorded and
/// counted first, whatever it does).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Behaviour {
    /// Answers from its table of values (the default).
    #[default]
    Answer,
    /// Answers from its table after this delay (to keep a request in
    /// flight, for single-flight tests).
    Delay(Duration),
    /// Answers this status (such as 503) with a short text body.
    Fail(u16),
    /// Never answers (until the fake is dropped), for timeout tests.
    Hang,
    /// Answers exactly this (for malformed answers).
    Raw {
        /// The status.
        status: u16,
        /// The `Content-Type`.
        content_type: String,
        /// The body.
        body: String,
    },
}

/// The request log and behaviour of one fake.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    count: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    behaviour: Mutex<Behaviour>,
    pub(crate) shutdown: CancellationToken,
}

impl Recorder {
    /// A recorder, in an `Arc` to share with the handlers.
    pub(crate) fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// How many requests arrived.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the behaviour for the next requests.
    pub(crate) fn set_behaviour(&self, behaviour: Behaviour) {
        *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Records a request, then answers it as told, with `answer` giving the
    /// normal answer.
    pub(crate) async fn handle(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        answer: impl FnOnce(&RecordedRequest) -> Response,
    ) -> Response {
        let request = RecordedRequest {
            method,
            uri: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), ToString::to_string),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        self.count.fetch_add(1, Ordering::SeqCst);
        let behaviour = self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match behaviour {
            Behaviour::Answer => answer(&request),
            Behaviour::Delay(delay) => {
                tokio::time::sleep(delay).await;
                answer(&request)
            }
            Behaviour::Fail(status) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, format!("injected failure {status}")).into_response()
            }
            Behaviour::Hang => {
                self.shutdown.cancelled().await;
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
            Behaviour::Raw {
                status,
                content_type,
                body,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
        }
    }
}
