//! Pulling raw files from a council's HTTP API. Every page of a pull is fetched with `GET`,
//! checked to be JSON, and written to the landing folder exactly as received (temp file, fsync,
//! rename), so that each response is a raw batch that can be replayed and is decoded by the
//! normal pipeline like a dropped file.
//!
//! Requests are bounded: at most `max_attempts` per page (timeouts, connection errors,
//! truncated bodies, 429 and 5xx are retried with exponential backoff; other 4xx fail at once)
//! and at most `max_pages` pages per pull. Credentials live in [`Secret`]s, which never show
//! their value; URLs in logs and errors have their query-string secrets redacted
//! ([`redact_url`]); response bodies are never logged.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, LINK, RETRY_AFTER};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::{RawFile, SourceError, io as io_error};

/// Longest wait between two attempts when backing off.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// What a redacted value is replaced by.
const REDACTED: &str = "***";
/// Query parameters whose name contains one of these (lower case, `-`/`_` ignored) are secrets.
const SECRET_PARAMS: [&str; 10] = [
    "key",
    "token",
    "secret",
    "pass",
    "pwd",
    "sig",
    "auth",
    "credential",
    "session",
    "code",
];
/// Same-origin redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// A credential: its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret from a value already in memory (tests, or a value read by the caller).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret in environment variable `var`. Errors name the variable, never the value.
    pub fn from_env(var: &str) -> Result<Self, SourceError> {
        let failed = |kind, message: &str| SourceError::Io {
            action: "read the secret in environment variable",
            path: PathBuf::from(var),
            source: io::Error::new(kind, message.to_string()),
        };
        match std::env::var(var) {
            Ok(value) => Self::checked(value)
                .ok_or_else(|| failed(io::ErrorKind::InvalidData, "the variable is empty")),
            Err(std::env::VarError::NotPresent) => Err(failed(
                io::ErrorKind::NotFound,
                "not set; export it, or give the secret in a file",
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(failed(
                io::ErrorKind::InvalidData,
                "the value is not valid UTF-8",
            )),
        }
    }

    /// The secret in a file (a mounted secret), without its trailing newline. Errors name the
    /// file, never the value.
    pub fn from_file(path: &Path) -> Result<Self, SourceError> {
        let value =
            std::fs::read_to_string(path).map_err(io_error("read the secret file", path))?;
        Self::checked(value).ok_or_else(|| SourceError::Io {
            action: "read the secret file",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "the file is empty"),
        })
    }

    fn checked(value: String) -> Option<Self> {
        let trimmed = value.trim_end_matches(['\r', '\n']);
        (!trimmed.is_empty()).then(|| Self(trimmed.to_string()))
    }

    /// The value, to put in a request. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// User name (not a secret: it may appear in errors).
        user: String,
        /// Password.
        password: Secret,
    },
    /// The key in a header of its own, such as `X-Api-Key`.
    ApiKey {
        /// Header name.
        header: String,
        /// The key.
        key: Secret,
    },
}

impl Auth {
    /// What is sent, for errors: never the secret.
    fn describe(&self) -> String {
        match self {
            Auth::None => "no credentials were sent".into(),
            Auth::Bearer { .. } => "bearer token".into(),
            Auth::Basic { user, .. } => format!("basic auth as user {user}"),
            Auth::ApiKey { header, .. } => format!("API key in header {header}"),
        }
    }

    fn secret(&self) -> Option<&Secret> {
        match self {
            Auth::None => None,
            Auth::Bearer { token } => Some(token),
            Auth::Basic { password, .. } => Some(password),
            Auth::ApiKey { key, .. } => Some(key),
        }
    }
}

/// How the pages of a pull are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request.
    None,
    /// The next page's URL is in the body at a JSON pointer (absolute, or relative to the page's
    /// URL); the pull ends when it is missing, `null` or empty.
    NextLink {
        /// JSON pointer to the next URL, e.g. `/links/next`.
        pointer: String,
    },
    /// RFC 8288 `Link: <...>; rel="next"` header; the pull ends when there is none.
    LinkHeader,
    /// A page-number query parameter, from `start` up. The pull ends on a page whose records
    /// array is empty or, when the page size is sent, shorter than it.
    Page {
        /// Page-number parameter, e.g. `page`.
        param: String,
        /// First page number (0 or 1, as the API counts).
        start: u64,
        /// Page-size parameter and the size asked for, e.g. `("per_page", 100)`.
        size_param: Option<(String, u64)>,
    },
    /// An offset query parameter from 0, advanced by the records received. The pull ends on a
    /// page whose records array is empty or shorter than `limit` (so `limit` must not exceed the
    /// API's own maximum page size).
    Offset {
        /// Offset parameter, e.g. `offset`.
        param: String,
        /// Limit parameter, e.g. `limit`.
        limit_param: String,
        /// Records asked for per page.
        limit: u64,
    },
}

/// A council API to pull from.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// First page (query parameters of `Page`/`Offset` pagination are set on it).
    pub url: Url,
    /// Credentials.
    pub auth: Auth,
    /// How the next page is found.
    pub pagination: Pagination,
    /// Whole-request timeout (connect, headers and body).
    pub timeout: Duration,
    /// Attempts per request (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles each time, up to 30 s.
    pub first_backoff: Duration,
    /// Pages per pull: a pull that has more fails rather than stopping short.
    pub max_pages: u32,
    /// Extra request headers (not for secrets: they are shown in `Debug`; use `auth`).
    pub headers: Vec<(String, String)>,
    /// JSON pointer to the records array in a page (`""`: the body is the array). Needed by
    /// `Page` and `Offset` pagination; otherwise only used to log record counts.
    pub records_at: String,
    /// Largest response body read (a page held in memory); a larger one fails the pull.
    pub max_page_bytes: u64,
}

/// Default bound of one response body: 64 MiB.
pub const DEFAULT_MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a pull failed; carried inside [`SourceError::Io`] (action `fetch`, path the redacted
/// URL), from which it can be downcast.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 401 or 403.
    #[error(
        "HTTP {status}: the server refused the credentials ({auth}); check the configured secret"
    )]
    CredentialsRefused {
        /// Status code.
        status: u16,
        /// Which credentials were sent (never their value).
        auth: String,
    },
    /// A status that is not retried.
    #[error(
        "HTTP {status} {reason}; not retried (only timeouts, connection errors, 429 and 5xx are)"
    )]
    Status {
        /// Status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A redirect to another site, not followed so that credentials stay with the configured one.
    #[error(
        "HTTP {status} {reason}: redirect to another site not followed; configure the final URL"
    )]
    Redirect {
        /// Status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
    },
    /// The body does not parse as JSON.
    #[error("page {page} is not valid JSON ({message}); it was not written")]
    NotJson {
        /// Page number in this pull (from 1).
        page: u32,
        /// Parser message (position, never content).
        message: String,
    },
    /// Page or offset pagination found no records array.
    #[error("page {page} has no records array at JSON pointer \"{pointer}\"; check records_at")]
    NoRecords {
        /// Page number in this pull.
        page: u32,
        /// The pointer.
        pointer: String,
    },
    /// The next-page link cannot be followed.
    #[error("page {page}: {message}")]
    NextLink {
        /// Page number in this pull.
        page: u32,
        /// What is wrong.
        message: String,
    },
    /// A response body is larger than allowed (read no further than the bound).
    #[error(
        "a page is larger than {max_page_bytes} bytes; raise `http.max_page_bytes` if the API really sends pages this large"
    )]
    PageTooLarge {
        /// The bound.
        max_page_bytes: u64,
    },
    /// There are more pages than allowed.
    #[error(
        "there are more than {max_pages} pages; raise max_pages if the feed really is this large"
    )]
    TooManyPages {
        /// The bound.
        max_pages: u32,
    },
    /// The source is configured wrongly.
    #[error("{0}")]
    Config(String),
}

impl HttpError {
    fn kind(&self) -> io::ErrorKind {
        match self {
            HttpError::CredentialsRefused { .. } => io::ErrorKind::PermissionDenied,
            HttpError::Status { status: 404, .. } => io::ErrorKind::NotFound,
            HttpError::GaveUp { .. } => io::ErrorKind::TimedOut,
            HttpError::NotJson { .. }
            | HttpError::NoRecords { .. }
            | HttpError::NextLink { .. } => io::ErrorKind::InvalidData,
            HttpError::Config(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        }
    }
}

/// A successful response, body read in full.
struct Page {
    /// The URL that answered (after same-site redirects), to resolve relative links against.
    url: Url,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// How one attempt ended, when it did not succeed.
enum Failed {
    /// Worth another attempt, after `wait` if the server said so.
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
    /// Not worth another attempt.
    Fatal(HttpError),
}

impl HttpSource {
    /// A source of one page with no credentials and moderate bounds: 30 s timeout, 5 attempts
    /// from 1 s backoff, 1,000 pages, records being the whole body.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            auth: Auth::None,
            pagination: Pagination::None,
            timeout: Duration::from_secs(30),
            max_attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_pages: 1000,
            headers: Vec::new(),
            records_at: String::new(),
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
        }
    }

    /// Fetches every page into `landing` as `<name_prefix>_<UTC timestamp>_p<NNNN>.json`
    /// (page numbers from 1, zero-padded so that names sort in page order), each written
    /// atomically and exactly as received, and returns them in page order. On failure the pages
    /// this pull had already written are removed, so that no partial pull is processed.
    pub async fn fetch(
        &self,
        landing: &Path,
        name_prefix: &str,
    ) -> Result<Vec<RawFile>, SourceError> {
        let mut written = Vec::new();
        match self.fetch_into(landing, name_prefix, &mut written).await {
            Ok(()) => Ok(written),
            Err(e) => {
                for f in &written {
                    let _ = std::fs::remove_file(&f.path);
                }
                if !written.is_empty() {
                    tracing::warn!(
                        url = %self.show(&self.url),
                        pages = written.len(),
                        "pull failed; removed the pages it had written"
                    );
                }
                Err(e)
            }
        }
    }

    async fn fetch_into(
        &self,
        landing: &Path,
        name_prefix: &str,
        written: &mut Vec<RawFile>,
    ) -> Result<(), SourceError> {
        self.check(name_prefix)
            .map_err(|m| self.fail(&self.url, HttpError::Config(m)))?;
        std::fs::create_dir_all(landing).map_err(io_error("create", landing))?;
        let client = self.client()?;
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let mut url = match &self.pagination {
            Pagination::Page { start, .. } => self.numbered(*start),
            Pagination::Offset { .. } => self.numbered(0),
            _ => self.url.clone(),
        };
        let mut offset = 0u64;
        let mut seen = HashSet::new();
        let max_pages = self.max_pages.max(1);
        for number in 1..=max_pages {
            seen.insert(url.to_string());
            let page = self.get(&client, &url, number).await?;
            let json: Value = serde_json::from_slice(&page.body).map_err(|e| {
                self.fail(
                    &url,
                    HttpError::NotJson {
                        page: number,
                        message: e.to_string(),
                    },
                )
            })?;
            let records = json
                .pointer(&self.records_at)
                .and_then(Value::as_array)
                .map(Vec::len);
            let name = format!("{name_prefix}_{stamp}_p{number:04}.json");
            let file = write_page(landing.to_path_buf(), name, page.body).await?;
            tracing::info!(
                url = %self.show(&url),
                page = number,
                bytes = file.size,
                records,
                file = %file.name,
                "fetched a page"
            );
            written.push(file);

            let next = match &self.pagination {
                Pagination::None => None,
                Pagination::NextLink { pointer } => match json.pointer(pointer) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.trim().is_empty() => None,
                    Some(Value::String(s)) => Some(page.url.join(s.trim()).map_err(|e| {
                        self.fail(
                            &url,
                            HttpError::NextLink {
                                page: number,
                                message: format!("the next link at {pointer} is not a URL: {e}"),
                            },
                        )
                    })?),
                    Some(_) => {
                        return Err(self.fail(
                            &url,
                            HttpError::NextLink {
                                page: number,
                                message: format!(
                                    "expected the next page's URL (a string) at {pointer}"
                                ),
                            },
                        ));
                    }
                },
                Pagination::LinkHeader => {
                    let values = page
                        .headers
                        .get_all(LINK)
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    match next_link(values) {
                        None => None,
                        Some(s) => Some(page.url.join(&s).map_err(|e| {
                            self.fail(
                                &url,
                                HttpError::NextLink {
                                    page: number,
                                    message: format!(
                                        "the Link header's next URL is not valid: {e}"
                                    ),
                                },
                            )
                        })?),
                    }
                }
                Pagination::Page {
                    start, size_param, ..
                } => {
                    let n = self.count(records, &url, number)?;
                    let short = size_param.as_ref().is_some_and(|(_, size)| n < *size);
                    (n > 0 && !short).then(|| self.numbered(start + u64::from(number)))
                }
                Pagination::Offset { limit, .. } => {
                    let n = self.count(records, &url, number)?;
                    offset += n;
                    (n > 0 && n >= *limit).then(|| self.numbered(offset))
                }
            };
            let Some(next) = next else {
                return Ok(());
            };
            if number == max_pages {
                return Err(self.fail(&self.url, HttpError::TooManyPages { max_pages }));
            }
            if next.origin() != self.url.origin() {
                return Err(self.fail(
                    &url,
                    HttpError::NextLink {
                        page: number,
                        message: format!(
                            "the next page is on another site ({}); not followed so that the credentials stay with the configured one",
                            next.origin().ascii_serialization()
                        ),
                    },
                ));
            }
            if seen.contains(next.as_str()) {
                return Err(self.fail(
                    &url,
                    HttpError::NextLink {
                        page: number,
                        message: "the next page's URL is one already fetched in this pull".into(),
                    },
                ));
            }
            url = next;
        }
        Ok(())
    }

    /// The configured URL with the page number (or offset) `value` and the page size (or limit)
    /// of `Page`/`Offset` pagination set, always in that order.
    fn numbered(&self, value: u64) -> Url {
        match &self.pagination {
            Pagination::Page {
                param, size_param, ..
            } => {
                let mut params = vec![(param.as_str(), value)];
                if let Some((name, size)) = size_param {
                    params.push((name.as_str(), *size));
                }
                with_params(&self.url, &params)
            }
            Pagination::Offset {
                param,
                limit_param,
                limit,
            } => with_params(&self.url, &[(param, value), (limit_param, *limit)]),
            _ => self.url.clone(),
        }
    }

    /// The records on a page, for page/offset pagination.
    fn count(&self, records: Option<usize>, url: &Url, page: u32) -> Result<u64, SourceError> {
        records.map(|n| n as u64).ok_or_else(|| {
            self.fail(
                url,
                HttpError::NoRecords {
                    page,
                    pointer: self.records_at.clone(),
                },
            )
        })
    }

    /// Configuration errors found before any request.
    fn check(&self, name_prefix: &str) -> Result<(), String> {
        if name_prefix.is_empty()
            || name_prefix.starts_with('.')
            || name_prefix.contains(['/', '\\'])
        {
            return Err(format!(
                "the page name prefix {name_prefix:?} must be a plain file name (no folders, not starting with a dot)"
            ));
        }
        let mut pointers = vec![("records_at", self.records_at.as_str())];
        if let Pagination::NextLink { pointer } = &self.pagination {
            pointers.push(("next-link pointer", pointer));
        }
        for (what, p) in pointers {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!(
                    "the {what} {p:?} is not a JSON pointer: it must be empty or start with / (e.g. /links/next)"
                ));
            }
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(format!(
                "the URL scheme {:?} is not http or https",
                self.url.scheme()
            ));
        }
        if self.url.scheme() == "http"
            && !matches!(self.auth, Auth::None)
            && !is_loopback(&self.url)
        {
            tracing::warn!(url = %self.show(&self.url), "credentials are sent over plain http; use https");
        }
        Ok(())
    }

    fn client(&self) -> Result<reqwest::Client, SourceError> {
        let config = |m: String| self.fail(&self.url, HttpError::Config(m));
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config(format!("{name:?} is not a valid header name")))?;
            let v = HeaderValue::from_str(value).map_err(|_| {
                config(format!(
                    "the value of header {name} is not a valid header value"
                ))
            })?;
            headers.append(n, v);
        }
        let secret_header = match &self.auth {
            Auth::None | Auth::Basic { .. } => None,
            Auth::Bearer { token } => Some((
                AUTHORIZATION,
                format!("Bearer {}", token.expose()),
                "the bearer token",
            )),
            Auth::ApiKey { header, key } => Some((
                HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    config(format!(
                        "{header:?} is not a valid header name for the API key"
                    ))
                })?,
                key.expose().to_string(),
                "the API key",
            )),
        };
        if let Some((name, value, what)) = secret_header {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| config(format!("{what} has characters not allowed in a header")))?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        let origin = self.url.origin();
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("council-bridge/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.url().origin() != origin {
                    attempt.stop()
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| {
                config(format!(
                    "cannot set up the HTTP client: {}",
                    chain(&e.without_url())
                ))
            })
    }

    /// One page, retried as allowed.
    async fn get(
        &self,
        client: &reqwest::Client,
        url: &Url,
        page: u32,
    ) -> Result<Page, SourceError> {
        let attempts = self.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let (reason, wait) = match self.attempt(client, url).await {
                Ok(p) => return Ok(p),
                Err(Failed::Fatal(e)) => return Err(self.fail(url, e)),
                Err(Failed::Retry { reason, wait }) => (reason, wait),
            };
            if attempt >= attempts {
                tracing::warn!(url = %self.show(url), page, attempt, reason = %reason, "request failed; no attempts left");
                return Err(self.fail(
                    url,
                    HttpError::GaveUp {
                        attempts,
                        last: reason,
                    },
                ));
            }
            let wait = wait.unwrap_or_else(|| backoff(self.first_backoff, attempt));
            tracing::warn!(
                url = %self.show(url),
                page,
                attempt,
                max_attempts = attempts,
                reason = %reason,
                wait_ms = wait.as_millis() as u64,
                "request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, client: &reqwest::Client, url: &Url) -> Result<Page, Failed> {
        let mut request = client.get(url.clone());
        if let Auth::Basic { user, password } = &self.auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            let final_url = response.url().clone();
            let headers = response.headers().clone();
            let declared = response.content_length();
            let too_large = || {
                Failed::Fatal(HttpError::PageTooLarge {
                    max_page_bytes: self.max_page_bytes,
                })
            };
            if declared.is_some_and(|n| n > self.max_page_bytes) {
                return Err(too_large());
            }
            // Read chunk by chunk, so a body without (or lying about) its length stops at the
            // bound instead of filling memory.
            let mut response = response;
            let mut body = Vec::with_capacity(
                declared.unwrap_or(0).min(self.max_page_bytes).min(1 << 20) as usize,
            );
            loop {
                let chunk = response
                    .chunk()
                    .await
                    .map_err(|e| match self.transport(e) {
                        Failed::Retry { reason, wait } => Failed::Retry {
                            reason: format!("reading the body: {reason}"),
                            wait,
                        },
                        fatal => fatal,
                    })?;
                let Some(chunk) = chunk else { break };
                if body.len() as u64 + chunk.len() as u64 > self.max_page_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            if let Some(n) = declared.filter(|n| *n != body.len() as u64) {
                return Err(Failed::Retry {
                    reason: format!("body truncated: {} of {n} bytes", body.len()),
                    wait: None,
                });
            }
            return Ok(Page {
                url: final_url,
                headers,
                body,
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let wait = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, Utc::now()));
            return Err(Failed::Retry {
                reason: format!("HTTP {status}"),
                wait,
            });
        }
        Err(Failed::Fatal(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HttpError::CredentialsRefused {
                status: status.as_u16(),
                auth: self.auth.describe(),
            },
            s if s.is_redirection() => HttpError::Redirect {
                status: s.as_u16(),
                reason: s.canonical_reason().unwrap_or_default().to_string(),
            },
            s => HttpError::Status {
                status: s.as_u16(),
                reason: s.canonical_reason().unwrap_or_default().to_string(),
            },
        }))
    }

    /// Classifies a transport error; its message never holds the URL.
    fn transport(&self, e: reqwest::Error) -> Failed {
        if e.is_builder() || e.is_redirect() {
            return Failed::Fatal(HttpError::Config(chain(&e.without_url())));
        }
        let reason = if e.is_timeout() {
            format!("timed out after {} ms", self.timeout.as_millis())
        } else {
            chain(&e.without_url())
        };
        Failed::Retry { reason, wait: None }
    }

    /// An error about a request to `url`.
    fn fail(&self, url: &Url, error: HttpError) -> SourceError {
        SourceError::Io {
            action: "fetch",
            path: PathBuf::from(self.show(url)),
            source: io::Error::new(error.kind(), error),
        }
    }

    /// The URL as it may be logged: query secrets redacted, and the configured secret hidden
    /// wherever it appears.
    fn show(&self, url: &Url) -> String {
        let shown = redact_url(url);
        match self.auth.secret().map(Secret::expose) {
            Some(s) if s.len() >= 4 => shown.replace(s, REDACTED),
            _ => shown,
        }
    }
}

/// The URL with the password of its user info and the values of query parameters that look
/// secret (`api_key`, `token`, `signature`, `client_secret`, ...) replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some(REDACTED));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| is_secret_param(k)) {
        let redacted: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    REDACTED.into()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(redacted);
    }
    u.to_string()
}

fn is_secret_param(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_PARAMS.iter().any(|s| n.contains(s))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `url` with each `(name, value)` query parameter set (replacing any of that name).
fn with_params(url: &Url, params: &[(&str, u64)]) -> Url {
    let mut u = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(p, _)| k == p))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear().extend_pairs(kept);
        for (name, value) in params {
            q.append_pair(name, &value.to_string());
        }
    }
    u
}

/// An error and its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Wait before attempt `attempt + 1`: `first` doubled `attempt - 1` times, at most 30 s.
fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(31))
        .min(MAX_BACKOFF)
}

/// A `Retry-After` value (seconds, or an HTTP-date) as a wait from `now`, at most 60 s.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let when = http_date(value)?;
        (when - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An HTTP-date (RFC 9110: IMF-fixdate, or the obsolete RFC 850 and asctime forms).
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc2822(value) {
        return Some(d.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|n| n.and_utc())
}

/// The target of the first `rel="next"` link in RFC 8288 `Link` header values.
fn next_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    values.into_iter().find_map(|v| {
        parse_links(v)
            .into_iter()
            .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
            .map(|(target, _)| target)
    })
}

/// `(target, rel values)` of each link in one `Link` header value.
fn parse_links(value: &str) -> Vec<(String, Vec<String>)> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(after) = rest.strip_prefix('<') else {
            break;
        };
        let Some(end) = after.find('>') else {
            break;
        };
        let target = after[..end].trim().to_string();
        rest = &after[end + 1..];
        let mut rels = Vec::new();
        loop {
            rest = rest.trim_start();
            let Some(param) = rest.strip_prefix(';') else {
                break;
            };
            let param = param.trim_start();
            let name_end = param.find(['=', ';', ',']).unwrap_or(param.len());
            let name = param[..name_end].trim();
            rest = &param[name_end..];
            let mut value = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(quoted) = v.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut end = quoted.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    value.push(escaped);
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    rest = &quoted[end.min(quoted.len())..];
                } else {
                    let end = v.find([';', ',']).unwrap_or(v.len());
                    value = v[..end].trim().to_string();
                    rest = &v[end..];
                }
            }
            if name.eq_ignore_ascii_case("rel") {
                rels.extend(value.split_whitespace().map(str::to_string));
            }
        }
        links.push((target, rels));
        // Anything else before the next link (malformed parameters) is skipped.
        match rest.find(',') {
            Some(i) => rest = &rest[i..],
            None => break,
        }
    }
    links
}

/// Writes a page off the async threads.
async fn write_page(landing: PathBuf, name: String, body: Vec<u8>) -> Result<RawFile, SourceError> {
    let target = landing.join(&name);
    tokio::task::spawn_blocking(move || write_atomically(&landing, &name, &body))
        .await
        .map_err(|e| SourceError::Io {
            action: "write",
            path: target,
            source: io::Error::other(e.to_string()),
        })?
}

/// Writes `bytes` to `dir/name` through a hidden temp file, synced before the rename (and the
/// folder after it), so that the page is either absent or complete. Never overwrites a file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<RawFile, SourceError> {
    let target = dir.join(name);
    if target.exists() {
        return Err(io_error("write", &target)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file of this name already exists",
        )));
    }
    let temp = dir.join(format!(".{name}.part"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_error("create", &temp))?;
        f.write_all(bytes).map_err(io_error("write", &temp))?;
        f.sync_all().map_err(io_error("sync", &temp))?;
        drop(f);
        std::fs::rename(&temp, &target).map_err(io_error("rename", &temp))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))?;
    Ok(RawFile {
        path: target,
        name: name.to_string(),
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_is_found_among_other_links_and_parameters() {
        let h = r#"<https://api.example/w?page=1>; rel="prev", <https://api.example/w?page=3&a=1,2>; rel="next"; title="Next, please", <https://api.example/w?page=9>; rel=last"#;
        assert_eq!(
            next_link([h]).as_deref(),
            Some("https://api.example/w?page=3&a=1,2"),
            "commas inside <> and inside quoted parameters do not split links"
        );
        assert_eq!(
            next_link([r#"</w?page=2>; rel="last NEXT""#]).as_deref(),
            Some("/w?page=2"),
            "rel may hold several values, any case; relative targets are kept for the caller to resolve"
        );
        assert_eq!(
            next_link(["<https://a/1>; rel=prev", "<https://a/3>;rel=next"]).as_deref(),
            Some("https://a/3"),
            "a second Link header is read too, unquoted rel, no space"
        );
        assert_eq!(next_link([r#"<https://a/1>; rel="prev""#]), None);
        assert_eq!(next_link([r#"<https://a/1>; rel="nextish""#]), None);
        assert_eq!(next_link(["garbage", ""]), None);
        assert_eq!(
            next_link([r#"<https://a/1>; title="say \"hi\"; rel=next"; rel="prev", <https://a/2>; rel="next""#]).as_deref(),
            Some("https://a/2"),
            "escaped quotes inside a quoted value are not the end of it"
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_capped_at_a_minute() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(retry_after("3600", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10)),
            "RFC 850 form"
        );
        assert_eq!(
            retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5)),
            "asctime form"
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_thirty_seconds() {
        let first = Duration::from_millis(500);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_secs(1));
        assert_eq!(backoff(first, 4), Duration::from_secs(4));
        assert_eq!(backoff(first, 8), MAX_BACKOFF);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn urls_lose_query_secrets_and_passwords_but_keep_the_rest() {
        let u = Url::parse(
            "https://svc:hunter22@api.example/v1/workers?page=2&api_key=K1&Access-Token=T2&client_secret=S3&sig=G4&per_page=50",
        )
        .unwrap();
        let shown = redact_url(&u);
        for secret in ["hunter22", "K1", "T2", "S3", "G4"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert_eq!(
            shown,
            "https://svc:***@api.example/v1/workers?page=2&api_key=***&Access-Token=***&client_secret=***&sig=***&per_page=50"
        );
        let plain = Url::parse("https://api.example/w?page=2&q=a%20b").unwrap();
        assert_eq!(
            redact_url(&plain),
            plain.to_string(),
            "nothing to hide: untouched"
        );

        let mut source = HttpSource::new(Url::parse("https://api.example/abcd1234/w").unwrap());
        source.auth = Auth::Bearer {
            token: Secret::new("abcd1234"),
        };
        assert_eq!(
            source.show(&source.url),
            "https://api.example/***/w",
            "the configured secret is hidden wherever it appears"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let source = HttpSource {
            auth: Auth::Basic {
                user: "svc".into(),
                password: Secret::new("pa55-word-value"),
            },
            ..HttpSource::new(Url::parse("https://api.example/w").unwrap())
        };
        let key = Auth::ApiKey {
            header: "X-Api-Key".into(),
            key: Secret::new("key-value-123"),
        };
        let shown = format!(
            "{source:?} {key:?} {:#?} {}",
            Secret::new("tok-value"),
            Secret::new("tok-value")
        );
        for v in ["pa55-word-value", "key-value-123", "tok-value"] {
            assert!(!shown.contains(v), "{v} leaked: {shown}");
        }
        assert!(shown.contains("Secret(***)") && shown.contains("svc"));
    }

    #[test]
    fn secrets_load_from_files_and_the_environment_with_errors_naming_only_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t-value\r\n").unwrap();
        assert_eq!(Secret::from_file(&file).unwrap().expose(), "s3cr3t-value");

        std::fs::write(&file, "\n").unwrap();
        let e = Secret::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("token") && e.contains("empty"), "{e}");

        let missing = dir.path().join("absent");
        let e = Secret::from_file(&missing).unwrap_err().to_string();
        assert!(e.contains("secret file") && e.contains("absent"), "{e}");

        // PATH is always set; this name never is.
        assert!(!Secret::from_env("PATH").unwrap().expose().is_empty());
        let e = Secret::from_env("COUNCIL_BRIDGE_TEST_UNSET_VARIABLE_7F3A")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("COUNCIL_BRIDGE_TEST_UNSET_VARIABLE_7F3A") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn page_and_offset_parameters_replace_any_already_in_the_url() {
        let u = Url::parse("https://api.example/w?page=7&status=active&limit=3").unwrap();
        assert_eq!(
            with_params(&u, &[("page", 1), ("limit", 50)]).as_str(),
            "https://api.example/w?status=active&page=1&limit=50"
        );
        let bare = Url::parse("https://api.example/w").unwrap();
        assert_eq!(
            with_params(&bare, &[("offset", 0)]).as_str(),
            "https://api.example/w?offset=0"
        );
    }

    #[test]
    fn pages_are_written_whole_or_not_at_all_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_atomically(dir.path(), "feed_p0001.json", b"{\"a\": 1}").unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"{\"a\": 1}");
        assert_eq!(f.size, 8);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(b"{\"a\": 1}")));
        let e = write_atomically(dir.path(), "feed_p0001.json", b"[]").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&f.path).unwrap(), b"{\"a\": 1}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
