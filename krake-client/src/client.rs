//! The [`Client`]: one connection pool to one Krake API, with its
//! authentication, TLS and timeouts.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Problem, Result};
use crate::guard::WriteGuard;
use crate::tls::TlsOptions;

/// A client of one Krake API. Cheap to clone: clones share the connection
/// pool, so connections are reused across handles and requests.
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
    base: Url,
    request_timeout: Duration,
    write_guard: Option<Arc<dyn WriteGuard>>,
}

/// Settings of a [`Client`]; from [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    tls: TlsOptions,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    pool_idle_timeout: Duration,
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

    /// A [`WriteGuard`] asked just before every write request (POST, PUT,
    /// PATCH, DELETE) goes out, and again before every retry; a refused
    /// write is not sent and fails with [`Error::WriteRefused`].
    pub fn write_guard(mut self, guard: Arc<dyn WriteGuard>) -> Self {
        self.write_guard = Some(guard);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        let base = parse_base(&self.url)?;
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
            base,
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

impl Client {
    /// A client of the API at `url` with the default settings.
    pub fn new(url: &str) -> Result<Self> {
        Self::builder(url).build()
    }

    /// Settings for a client of the API at `url` (`http://` or `https://`,
    /// optionally with a path prefix).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            tls: TlsOptions::default(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
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

    /// Asks the write guard whether a request with `method` may go out.
    fn check_write(&self, method: &Method) -> Result<()> {
        let is_write = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        match &self.write_guard {
            Some(guard) if is_write => guard
                .check()
                .map_err(|reason| Error::WriteRefused { reason }),
            _ => Ok(()),
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of an API path such as `/kubernetes/applications`.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    /// Sends a request and decodes its JSON answer.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
    ) -> Result<T> {
        let response = self.start(method, path, query, body, None).await?;
        let bytes = response.bytes().await.map_err(Error::Transport)?;
        serde_json::from_slice(&bytes).map_err(Error::Decode)
    }

    /// Sends a request and returns the response once its status is a
    /// success; error statuses become [`Error::Api`] with the problem body.
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
    ) -> Result<reqwest::Response> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.check_write(&method)?;
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
        let status = response.status();
        if status.is_success() {
            return Ok(response);
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
