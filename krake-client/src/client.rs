//! The [`Client`]: one connection pool to one Krake API (or to several
//! replicas of it, with failover), with its authentication, TLS, timeouts
//! and write guard.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::endpoints::Endpoints;
use crate::error::{Error, Problem, Result};
use crate::guard::WriteGuard;
use crate::tls::TlsOptions;

/// A client of one Krake API. Cheap to clone: clones share the connection
/// pool, so connections are reused across handles and requests, and share
/// the state of the endpoints (which replica is current, which rest).
///
/// ```no_run
/// # async fn example() -> Result<(), krake_client::Error> {
/// use krake_client::{Client, TlsOptions};
///
/// let plain = Client::new("http://localhost:8080")?;
/// let secure = Client::builder("https://krake.example:8443")
///     .tls(TlsOptions::from_files(
///         Some("ca.pem".as_ref()),
///         Some("client.pem".as_ref()),
///         Some("client-key.pem".as_ref()),
///     )?)
///     .token("a-keystone-token")
///     .build()?;
/// println!("{}", plain.version().await?);
/// # let _ = secure;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    request_timeout: Duration,
    write_guard: Option<Arc<dyn WriteGuard>>,
}

/// Settings of a [`Client`]; from [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    urls: Vec<String>,
    tls: TlsOptions,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    pool_idle_timeout: Duration,
    endpoint_backoff: Backoff,
    write_guard: Option<Arc<dyn WriteGuard>>,
}

impl ClientBuilder {
    /// TLS settings (CA, client certificate and key).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// A token sent as-is in the `Authorization` header, as Krake's Keystone
    /// and Keycloak authentication expect it.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A bearer token: `Authorization: Bearer <token>` (OIDC).
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        let token = format!("Bearer {}", token.as_ref());
        self.token(token)
    }

    /// How long connecting may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request and its answer may take (default 60 s, a little
    /// more than Krake's blocking requests). A watch's stream has no limit;
    /// its headers must come within this time or three heartbeats, whichever
    /// is shorter.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long an idle connection is kept for reuse (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Several replicas of the API (all serving the same store), in order
    /// of preference. They replace the URL given to [`Client::builder`];
    /// an empty list is refused by [`build`](Self::build).
    ///
    /// # Failover
    ///
    /// - Requests go to the *current* endpoint, the first at the start. It
    ///   stays current until a connection to it fails.
    /// - A connection failure (connection refused or reset, connect
    ///   timeout, the connection lost before the answer was complete, a
    ///   request or watch-headers timeout) makes the endpoint *rest* for a delay of
    ///   [`endpoint_backoff`](Self::endpoint_backoff), growing with each
    ///   failure in a row, and the next endpoint becomes current. A resting
    ///   endpoint is skipped while others are available; once its rest is
    ///   over it is tried again when its turn comes, and a successful answer
    ///   makes it healthy. If every endpoint rests, the one whose rest ends
    ///   first is tried: a client never refuses to try.
    /// - The failed request is retried on the next endpoint, each endpoint
    ///   at most once per request, when that is safe: reads (GET) after any
    ///   of these failures; writes (POST, PUT, PATCH, DELETE) only after a
    ///   failure to *connect*, when the request certainly was not sent.
    ///   A write whose connection broke after it may have been sent fails
    ///   with [`Error::Transport`]: it may or may not have been applied,
    ///   and only the caller can tell (read the object, or rely on a 409 for
    ///   a repeated create).
    /// - An answer with an error status (4xx, 5xx) is not a connection
    ///   failure: the replicas share their store, so another would answer
    ///   the same. It is returned as [`Error::Api`].
    /// - A [watch](crate::watch) whose stream breaks makes its endpoint rest
    ///   and resumes from the last `resource_version` on the next endpoint:
    ///   the replicas share one store, so versions agree and no event is
    ///   missed or repeated.
    ///
    /// ```
    /// use krake_client::Client;
    ///
    /// let client = Client::builder("http://krake-a:8080")
    ///     .endpoints(["http://krake-a:8080", "http://krake-b:8080"])
    ///     .build()?;
    /// assert_eq!(client.endpoints().len(), 2);
    /// assert_eq!(client.current_endpoint().as_str(), "http://krake-a:8080/");
    /// # Ok::<(), krake_client::Error>(())
    /// ```
    pub fn endpoints<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// How long a failed endpoint rests before it is tried again (default:
    /// 1 s, doubling per failure in a row up to 30 s, with jitter). Only
    /// matters with several [`endpoints`](Self::endpoints).
    pub fn endpoint_backoff(mut self, backoff: Backoff) -> Self {
        self.endpoint_backoff = backoff;
        self
    }

    /// A [`WriteGuard`] asked just before every write request (POST, PUT,
    /// PATCH, DELETE) goes out, and again before every retry; a refused
    /// write is not sent and fails with [`Error::WriteRefused`].
    pub fn write_guard(mut self, guard: Arc<dyn WriteGuard>) -> Self {
        self.write_guard = Some(guard);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        if self.urls.is_empty() {
            return Err(Error::InvalidUrl {
                url: String::new(),
                reason: "no endpoint given".to_owned(),
            });
        }
        let urls = self
            .urls
            .iter()
            .map(|url| parse_base(url))
            .collect::<Result<Vec<_>>>()?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(token).map_err(|_| Error::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(self.pool_idle_timeout)
            .user_agent(concat!("krake-client/", env!("CARGO_PKG_VERSION")));
        let builder = self.tls.apply(builder)?;
        let http = builder.build().map_err(Error::Transport)?;
        Ok(Client {
            http,
            endpoints: Arc::new(Endpoints::new(urls, self.endpoint_backoff)),
            request_timeout: self.request_timeout,
            write_guard: self.write_guard,
        })
    }
}

fn parse_base(url: &str) -> Result<Url> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut base = Url::parse(url).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if base.cannot_be_a_base() {
        return Err(invalid("not a base URL"));
    }
    // Paths are appended: keep a prefix such as `/krake` without a trailing slash.
    let path = base.path().trim_end_matches('/').to_owned();
    base.set_path(&path);
    base.set_query(None);
    Ok(base)
}

/// Query parameters of one request.
pub(crate) type Query = Vec<(&'static str, String)>;

/// The URL of an API path such as `/kubernetes/applications` under `base`.
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// True for the methods a [`WriteGuard`] checks.
fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// What a failed attempt means for its endpoint and its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// An answer came (an error status), or the request was refused before
    /// it went out: the endpoint is fine, the error is the result.
    NotTheEndpoint,
    /// The connection failed; the request may have been sent and cannot be
    /// repeated safely.
    Endpoint,
    /// The connection failed and the request can be repeated elsewhere.
    EndpointRetry,
}

fn classify(method: &Method, err: &Error) -> Failure {
    match err {
        // The connection was never made: nothing was sent.
        Error::Transport(err) if err.is_connect() => Failure::EndpointRetry,
        // Lost or silent before an answer: a read can be repeated.
        Error::Transport(_) | Error::Timeout if is_write(method) => Failure::Endpoint,
        Error::Transport(_) | Error::Timeout => Failure::EndpointRetry,
        _ => Failure::NotTheEndpoint,
    }
}

/// A response whose status is a success, and the endpoint that sent it.
pub(crate) struct Answer {
    pub(crate) response: reqwest::Response,
    pub(crate) endpoint: usize,
}

impl Client {
    /// A client of the API at `url` with the default settings.
    pub fn new(url: &str) -> Result<Self> {
        Self::builder(url).build()
    }

    /// Settings for a client of the API at `url` (`http://` or `https://`,
    /// optionally with a path prefix). For several replicas, see
    /// [`ClientBuilder::endpoints`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            urls: vec![url.into()],
            tls: TlsOptions::default(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            endpoint_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                factor: 2.0,
                jitter: true,
            },
            write_guard: None,
        }
    }

    /// A clone sharing this client's connection pool whose writes are
    /// checked by `guard` (replacing any guard this client has).
    #[must_use]
    pub fn with_write_guard(&self, guard: Arc<dyn WriteGuard>) -> Client {
        Client {
            write_guard: Some(guard),
            ..self.clone()
        }
    }

    /// Whether this client may write now: `Ok` without a write guard, else
    /// what the guard says ([`Error::WriteRefused`] when it refuses). For
    /// writes made on the client's behalf elsewhere (a controller applying
    /// to a Kubernetes cluster under the same lease) to be fenced like its
    /// own requests.
    pub fn may_write(&self) -> Result<()> {
        self.check_write(&Method::POST)
    }

    /// Asks the write guard whether a request with `method` may go out.
    fn check_write(&self, method: &Method) -> Result<()> {
        match &self.write_guard {
            Some(guard) if is_write(method) => guard
                .check()
                .map_err(|reason| Error::WriteRefused { reason }),
            _ => Ok(()),
        }
    }

    /// The base URL: the first endpoint.
    pub fn base_url(&self) -> &Url {
        self.endpoints.url(0)
    }

    /// Every endpoint, in order of preference (one unless
    /// [`ClientBuilder::endpoints`] gave more).
    pub fn endpoints(&self) -> &[Url] {
        self.endpoints.urls()
    }

    /// The endpoint requests go to now.
    pub fn current_endpoint(&self) -> &Url {
        self.endpoints.url(self.endpoints.current())
    }

    /// The URL of an API path on the first endpoint.
    #[cfg(test)]
    pub(crate) fn url(&self, path: &str) -> Url {
        join(self.base_url(), path)
    }

    /// A watch stream from `endpoint` broke: it rests, and the next
    /// endpoint becomes current.
    pub(crate) fn stream_broke(&self, endpoint: usize) {
        if self.endpoints.len() > 1 {
            self.endpoints.failed(endpoint);
        }
    }

    /// Sends a request and decodes its JSON answer, failing over between
    /// endpoints as [`ClientBuilder::endpoints`] describes (a read whose
    /// answer breaks off while its body is read is repeated too).
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
    ) -> Result<T> {
        let mut tried = Vec::new();
        let mut endpoint = self.endpoints.pick(&tried).unwrap_or_default();
        loop {
            tried.push(endpoint);
            let attempt = async {
                let answer = self
                    .attempt(endpoint, &method, path, query, body, None)
                    .await?;
                answer.response.bytes().await.map_err(Error::Transport)
            };
            match attempt.await {
                Ok(bytes) => return serde_json::from_slice(&bytes).map_err(Error::Decode),
                Err(err) => endpoint = self.next_endpoint(endpoint, &method, err, &tried)?,
            }
        }
    }

    /// Sends a request and returns the response once its status is a
    /// success, with the endpoint that answered; error statuses become
    /// [`Error::Api`] with the problem body. Fails over like
    /// [`send`](Self::send).
    ///
    /// `stream_headers_timeout` marks a streaming request (a watch): its body
    /// has no time limit, but its headers must arrive within that time.
    pub(crate) async fn start(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
        stream_headers_timeout: Option<Duration>,
    ) -> Result<Answer> {
        let mut tried = Vec::new();
        let mut endpoint = self.endpoints.pick(&tried).unwrap_or_default();
        loop {
            tried.push(endpoint);
            match self
                .attempt(endpoint, &method, path, query, body, stream_headers_timeout)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(err) => endpoint = self.next_endpoint(endpoint, &method, err, &tried)?,
            }
        }
    }

    /// Takes the failure of an attempt on `endpoint`: the endpoint to try
    /// next, or the error to return (not a connection failure, not safe to
    /// repeat, or every endpoint tried).
    fn next_endpoint(
        &self,
        endpoint: usize,
        method: &Method,
        err: Error,
        tried: &[usize],
    ) -> Result<usize> {
        let failure = classify(method, &err);
        if failure == Failure::NotTheEndpoint || self.endpoints.len() == 1 {
            return Err(err);
        }
        self.endpoints.failed(endpoint);
        if failure == Failure::Endpoint {
            return Err(err);
        }
        let Some(next) = self.endpoints.pick(tried) else {
            return Err(err);
        };
        tracing::debug!(
            error = %err,
            failed = %self.endpoints.url(endpoint),
            next = %self.endpoints.url(next),
            "request failed, trying the next endpoint"
        );
        Ok(next)
    }

    /// One attempt of a request on one endpoint.
    async fn attempt(
        &self,
        endpoint: usize,
        method: &Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
        stream_headers_timeout: Option<Duration>,
    ) -> Result<Answer> {
        let url = join(self.endpoints.url(endpoint), path);
        let mut request = self.http.request(method.clone(), url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.check_write(method)?;
        let response = match stream_headers_timeout {
            None => request
                .timeout(self.request_timeout)
                .send()
                .await
                .map_err(Error::Transport)?,
            Some(limit) => match tokio::time::timeout(limit, request.send()).await {
                Ok(sent) => sent.map_err(Error::Transport)?,
                Err(_) => return Err(Error::Timeout),
            },
        };
        self.endpoints.succeeded(endpoint);
        let status = response.status();
        if status.is_success() {
            return Ok(Answer { response, endpoint });
        }
        let bytes = response.bytes().await.map_err(Error::Transport)?;
        Err(Error::Api(Box::new(Problem::from_body(
            status.as_u16(),
            &bytes,
        ))))
    }

    /// How long a watch may wait for its response headers.
    pub(crate) fn watch_headers_timeout(&self, idle: Option<Duration>) -> Duration {
        idle.map_or(self.request_timeout, |idle| idle.min(self.request_timeout))
    }

    /// `GET /`: the API's version, e.g. `1.0.1`.
    ///
    /// ```no_run
    /// # async fn example(client: krake_client::Client) -> Result<(), krake_client::Error> {
    /// assert_eq!(client.version().await?, "1.0.1");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn version(&self) -> Result<String> {
        let body: Value = self.send(Method::GET, "/", &Vec::new(), None).await?;
        Ok(body
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// `GET /me`: who the API takes this client for, and its roles.
    ///
    /// ```no_run
    /// # async fn example(client: krake_client::Client) -> Result<(), krake_client::Error> {
    /// let me = client.me().await?;
    /// println!("{} {:?}", me.user, me.roles);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn me(&self) -> Result<Me> {
        self.send(Method::GET, "/me", &Vec::new(), None).await
    }

    /// Sends `body` as JSON (used by the typed handles).
    pub(crate) fn encode<T: Serialize>(body: &T) -> Result<Value> {
        serde_json::to_value(body).map_err(Error::Encode)
    }
}

/// The answer of `GET /me`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Me {
    /// The authenticated user.
    pub user: String,
    /// The roles bound to the user.
    #[serde(default)]
    pub roles: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_their_prefix_and_refuse_other_schemes() {
        let client = Client::new("http://localhost:8080/krake/").unwrap();
        assert_eq!(
            client.url("/kubernetes/applications").as_str(),
            "http://localhost:8080/krake/kubernetes/applications"
        );
        let client = Client::new("http://localhost:8080").unwrap();
        assert_eq!(client.url("/").as_str(), "http://localhost:8080/");
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::builder("http://x").token("bad\ntoken").build(),
            Err(Error::InvalidToken)
        ));
        assert!(matches!(
            Client::builder("http://x")
                .tls(TlsOptions {
                    client_cert_pem: Some(b"x".to_vec()),
                    ..TlsOptions::default()
                })
                .build(),
            Err(Error::IncompleteIdentity)
        ));
    }
}
