//! The HTTP pull source against a real HTTP/1.1 server started here on 127.0.0.1 (hand-rolled on
//! a TcpListener so that faults can be injected exactly: slow answers, 5xx, 429, truncated
//! bodies, 404, non-JSON, refused credentials). The server answers at most a bounded number of
//! connections and every test keeps its timeouts and backoffs small.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use council_bridge::sources::http::{Auth, HttpError, HttpSource, Pagination, Secret};
use council_bridge::sources::{RawFile, describe};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

const TOKEN: &str = "test-token-4c1e-not-real";
/// Fictional people, nine of them: three pages of three on `/workers`.
const PEOPLE: [&str; 9] = [
    "Alys Penhallow",
    "Bryn Castellan",
    "Cerys Oakley",
    "Dafydd Marchmont",
    "Elin Brackenbury",
    "Ffion Tolworth",
    "Gethin Ashdown",
    "Heledd Quennell",
    "Idris Fairbairn",
];
/// Connections one test server answers at most.
const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer normally, but only after this long.
    Slow(Duration),
    /// 500 Internal Server Error.
    ServerError,
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// Content-Length larger than the bytes sent, then close.
    Truncated,
    /// 404.
    NotFound,
    /// 200 with an HTML body.
    NotJson,
}

#[derive(Default)]
struct State {
    /// Request targets seen, in order.
    targets: Vec<String>,
    /// Request headers seen (lower-case names), per request.
    headers: Vec<Vec<(String, String)>>,
    /// Bodies of the complete 200 answers sent, in order.
    sent: Vec<Vec<u8>>,
    /// Faults to inject, by page number, each used once.
    faults: VecDeque<(u64, Fault)>,
    /// Header that must carry this value, else 401.
    expect: Option<(String, String)>,
    /// Host (and port) written in next links.
    link_host: String,
    /// Records behind `/paged` and `/offset`.
    total: usize,
}

struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    async fn start(faults: &[(u64, Fault)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            faults: faults.iter().copied().collect(),
            expect: Some(("authorization".into(), format!("Bearer {TOKEN}"))),
            link_host: addr.to_string(),
            total: 5,
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { addr, state }
    }

    fn url(&self, target: &str) -> Url {
        Url::parse(&format!("http://{}{target}", self.addr)).unwrap()
    }

    fn targets(&self) -> Vec<String> {
        self.state.lock().unwrap().targets.clone()
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().targets.len()
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    /// A bearer-token source of `/workers` with next-link pagination and small bounds.
    fn source(&self, target: &str) -> HttpSource {
        HttpSource {
            auth: Auth::Bearer {
                token: Secret::new(TOKEN),
            },
            pagination: Pagination::NextLink {
                pointer: "/links/next".into(),
            },
            timeout: Duration::from_secs(2),
            max_attempts: 4,
            first_backoff: Duration::from_millis(50),
            max_pages: 10,
            records_at: "/workers".into(),
            ..HttpSource::new(self.url(target))
        }
    }
}

/// `name=value` query parameter as a number.
fn param(target: &str, name: &str) -> Option<u64> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn workers(from: usize, to: usize) -> String {
    (from..to.min(PEOPLE.len()))
        .map(|i| {
            format!(
                "{{ \"id\": \"W{:04}\",  \"name\": \"{}\", \"grade\": \"SO{}\" }}",
                i + 1,
                PEOPLE[i],
                i % 3 + 1
            )
        })
        .collect::<Vec<_>>()
        .join(",\n    ")
}

/// Reads one request head (bounded), or None if the client went away.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

struct Answer {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(body: String) -> Self {
        Self {
            status: "200 OK",
            headers: vec![("Content-Type", "application/json".into())],
            body: body.into_bytes(),
        }
    }

    fn status(status: &'static str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: br#"{"error": "see status"}"#.to_vec(),
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let page = param(&target, "page").unwrap_or(1);
    let (fault, answer) = {
        let mut s = state.lock().unwrap();
        s.targets.push(target.clone());
        s.headers.push(headers.clone());
        let fault = s
            .faults
            .iter()
            .position(|(p, _)| *p == page)
            .and_then(|i| s.faults.remove(i))
            .map(|(_, f)| f);
        let authorised = s
            .expect
            .as_ref()
            .is_none_or(|(name, value)| headers.iter().any(|(k, v)| k == name && v == value));
        let answer = if !authorised {
            Answer::status("401 Unauthorized")
        } else {
            route(&target, page, &s)
        };
        if answer.status == "200 OK" && fault.is_none() {
            s.sent.push(answer.body.clone());
        }
        (fault, answer)
    };
    let answer = match fault {
        None => answer,
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            answer
        }
        Some(Fault::ServerError) => Answer::status("500 Internal Server Error"),
        Some(Fault::TooMany) => {
            let mut a = Answer::status("429 Too Many Requests");
            a.headers.push(("Retry-After", "1".into()));
            a
        }
        Some(Fault::NotFound) => Answer::status("404 Not Found"),
        Some(Fault::NotJson) => Answer {
            status: "200 OK",
            headers: vec![("Content-Type", "text/html".into())],
            body: b"<html><body>Service temporarily unavailable</body></html>".to_vec(),
        },
        Some(Fault::Truncated) => {
            let cut = answer.body.len() / 2;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&answer.body[..cut]).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer.body);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

fn route(target: &str, page: u64, s: &State) -> Answer {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/workers" if (1..=3).contains(&page) => {
            let next = if page < 3 {
                format!("\"http://{}/workers?page={}\"", s.link_host, page + 1)
            } else {
                "null".into()
            };
            let from = (page as usize - 1) * 3;
            Answer::json(format!(
                "{{\n  \"workers\": [\n    {}\n  ],\n  \"links\": {{ \"next\": {next} }}\n}}\n",
                workers(from, from + 3)
            ))
        }
        "/linked" if (1..=3).contains(&page) => {
            let from = (page as usize - 1) * 3;
            let mut a = Answer::json(format!("{{\"workers\": [{}]}}", workers(from, from + 3)));
            let link = if page < 3 {
                format!(
                    "</linked?page={}>; rel=\"next\", </linked?page=3>; rel=\"last\"",
                    page + 1
                )
            } else {
                "</linked?page=2>; rel=\"prev\"".into()
            };
            a.headers.push(("Link", link));
            a
        }
        "/paged" => {
            let start = param(target, "start").unwrap_or(1);
            let size = param(target, "size").unwrap_or(2) as usize;
            let from = (page.saturating_sub(start) as usize) * size;
            let to = (from + size).min(s.total);
            Answer::json(format!(
                "{{\"workers\": [{}]}}",
                workers(from, to.max(from))
            ))
        }
        "/offset" => {
            let from = param(target, "offset").unwrap_or(0) as usize;
            let limit = param(target, "limit").unwrap_or(2) as usize;
            let to = (from + limit).min(s.total);
            Answer::json(format!(
                "{{\"workers\": [{}]}}",
                workers(from, to.max(from))
            ))
        }
        "/moved" | "/elsewhere" => {
            let host = if path == "/moved" {
                s.link_host.clone()
            } else {
                format!("localhost:{}", s.link_host.rsplit(':').next().unwrap())
            };
            let mut a = Answer::status("302 Found");
            a.headers
                .push(("Location", format!("http://{host}/workers?page=3")));
            a
        }
        _ => Answer::status("404 Not Found"),
    }
}

/// Names of the entries of the landing folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Checks each file against the server's bodies and the hash, and returns the records.
fn check_pages(files: &[RawFile], sent: &[Vec<u8>]) -> Vec<serde_json::Value> {
    assert_eq!(files.len(), sent.len(), "one file per complete answer");
    let mut records = Vec::new();
    for (f, body) in files.iter().zip(sent) {
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(&bytes, body, "{} is the body exactly as sent", f.name);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(f.size, bytes.len() as u64);
        let again = describe(&f.path).unwrap();
        assert_eq!((again.sha256, again.size), (f.sha256.clone(), f.size));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        records.extend(json["workers"].as_array().unwrap().iter().cloned());
    }
    records
}

fn http_error(e: &council_bridge::sources::SourceError) -> &HttpError {
    match e {
        council_bridge::sources::SourceError::Io { source, .. } => source
            .get_ref()
            .and_then(|s| s.downcast_ref::<HttpError>())
            .unwrap_or_else(|| panic!("not an HTTP error: {e}")),
        other => panic!("not an HTTP error: {other}"),
    }
}

#[tokio::test]
async fn next_links_are_followed_and_each_page_is_kept_as_received() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let files = server
        .source("/workers?page=1")
        .fetch(landing.path(), "northshire_workers")
        .await
        .unwrap();

    assert_eq!(
        server.targets(),
        ["/workers?page=1", "/workers?page=2", "/workers?page=3"]
    );
    let headers = server.state.lock().unwrap().headers.clone();
    assert!(headers.iter().all(|h| {
        h.iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {TOKEN}"))
    }));
    let sent = server.state.lock().unwrap().sent.clone();
    let records = check_pages(&files, &sent);
    assert_eq!(records.len(), 9);
    assert_eq!(records[8]["name"], "Idris Fairbairn");

    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for (i, name) in names.iter().enumerate() {
        assert!(
            name.starts_with("northshire_workers_")
                && name.ends_with(&format!("Z_p{:04}.json", i + 1)),
            "{name}"
        );
    }
    let stamp = |n: &str| n.split('_').nth(2).unwrap().to_string();
    assert!(
        names.iter().all(|n| stamp(n) == stamp(names[0])),
        "one timestamp per pull"
    );
    assert_eq!(
        listing(landing.path()),
        names,
        "exactly the pages, no temp files left"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let server = Server::start(&[(2, Fault::Slow(Duration::from_secs(3)))]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        timeout: Duration::from_millis(300),
        ..server.source("/workers?page=1")
    };
    let started = Instant::now();
    let files = source.fetch(landing.path(), "w").await.unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(server.requests(), 4, "page 2 asked twice");
    assert_eq!(
        server.targets()[1..3],
        ["/workers?page=2", "/workers?page=2"]
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "did not wait for the slow answer"
    );
    let sent = server.state.lock().unwrap().sent.clone();
    assert_eq!(check_pages(&files, &sent).len(), 9);
}

#[tokio::test]
async fn server_errors_are_retried_with_doubling_backoff() {
    let server = Server::start(&[(2, Fault::ServerError), (2, Fault::ServerError)]).await;
    let landing = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let files = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(server.requests(), 5, "page 2 asked three times");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited 50 ms then 100 ms"
    );
    let sent = server.state.lock().unwrap().sent.clone();
    check_pages(&files, &sent);
}

#[tokio::test]
async fn too_many_requests_waits_as_long_as_retry_after_says() {
    let server = Server::start(&[(1, Fault::TooMany)]).await;
    let landing = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let files = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(server.requests(), 4);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 honoured rather than the 50 ms backoff: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_truncated_body_is_retried_and_never_written() {
    let server = Server::start(&[(2, Fault::Truncated)]).await;
    let landing = tempfile::tempdir().unwrap();
    let files = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap();
    assert_eq!(server.requests(), 4, "page 2 asked again after the cut");
    let sent = server.state.lock().unwrap().sent.clone();
    assert_eq!(
        sent.len(),
        3,
        "the cut answer is not among the complete ones"
    );
    assert_eq!(check_pages(&files, &sent).len(), 9);
    assert_eq!(listing(landing.path()).len(), 3);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let faults = [(1, Fault::ServerError); 6];
    let server = Server::start(&faults).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        max_attempts: 3,
        ..server.source("/workers?page=1")
    };
    let e = source.fetch(landing.path(), "w").await.unwrap_err();
    assert_eq!(server.requests(), 3);
    let text = e.to_string();
    assert!(
        text.contains("gave up after 3 attempts") && text.contains("500"),
        "{text}"
    );
    assert!(matches!(
        http_error(&e),
        HttpError::GaveUp { attempts: 3, .. }
    ));
    assert!(listing(landing.path()).is_empty());
}

#[tokio::test]
async fn not_found_fails_at_once_with_query_secrets_redacted() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let e = server
        .source("/missing?api_key=plain-key-9876&page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap_err();
    assert_eq!(server.requests(), 1, "a 404 is not retried");
    let text = e.to_string();
    assert!(text.contains("404 Not Found"), "{text}");
    assert!(
        text.contains(&format!(
            "http://{}/missing?api_key=***&page=1",
            server.addr
        )),
        "{text}"
    );
    assert!(!text.contains("plain-key-9876"), "{text}");
    assert!(matches!(
        http_error(&e),
        HttpError::Status { status: 404, .. }
    ));
    assert!(listing(landing.path()).is_empty());
}

#[tokio::test]
async fn a_page_that_is_not_json_fails_naming_url_and_page_and_the_pull_is_undone() {
    let server = Server::start(&[(2, Fault::NotJson)]).await;
    let landing = tempfile::tempdir().unwrap();
    let e = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap_err();
    assert_eq!(server.requests(), 2, "not retried");
    let text = e.to_string();
    assert!(
        text.contains("page 2 is not valid JSON") && text.contains("/workers?page=2"),
        "{text}"
    );
    assert!(!text.contains("Service temporarily"), "no body in errors");
    assert!(
        listing(landing.path()).is_empty(),
        "page 1 removed, page 2 never written: {:?}",
        listing(landing.path())
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_once_without_leaking_it() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        auth: Auth::Bearer {
            token: Secret::new("wrong-token-5150"),
        },
        ..server.source("/workers?page=1")
    };
    let e = source.fetch(landing.path(), "w").await.unwrap_err();
    assert_eq!(server.requests(), 1);
    let text = e.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("refused the credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong-token-5150") && !format!("{e:?}").contains("wrong-token-5150"));
    assert!(matches!(
        http_error(&e),
        HttpError::CredentialsRefused { status: 401, .. }
    ));
}

#[tokio::test]
async fn page_numbers_stop_on_a_short_page_or_an_empty_one() {
    let server = Server::start(&[]).await;
    server.set(|s| s.total = 5);
    let landing = tempfile::tempdir().unwrap();
    let sized = HttpSource {
        pagination: Pagination::Page {
            param: "page".into(),
            start: 1,
            size_param: Some(("size".into(), 2)),
        },
        ..server.source("/paged?page=9&status=active")
    };
    let files = sized.fetch(landing.path(), "sized").await.unwrap();
    assert_eq!(
        server.targets(),
        [
            "/paged?status=active&page=1&size=2",
            "/paged?status=active&page=2&size=2",
            "/paged?status=active&page=3&size=2",
        ],
        "2 + 2 + 1: the short third page is the last"
    );
    let sent = server.state.lock().unwrap().sent.clone();
    assert_eq!(check_pages(&files, &sent).len(), 5);

    // Without a size sent, only an empty page ends the pull; a server counting from 0.
    server.set(|s| s.targets.clear());
    let size_unknown = HttpSource {
        pagination: Pagination::Page {
            param: "page".into(),
            start: 0,
            size_param: None,
        },
        ..server.source("/paged?start=0")
    };
    let files = size_unknown.fetch(landing.path(), "unsized").await.unwrap();
    assert_eq!(
        server.targets(),
        [
            "/paged?start=0&page=0",
            "/paged?start=0&page=1",
            "/paged?start=0&page=2",
            "/paged?start=0&page=3",
        ]
    );
    assert_eq!(files.len(), 4, "the empty last answer is kept too");
}

#[tokio::test]
async fn offsets_advance_by_the_records_received_and_stop_on_a_short_or_empty_page() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        pagination: Pagination::Offset {
            param: "offset".into(),
            limit_param: "limit".into(),
            limit: 2,
        },
        ..server.source("/offset")
    };
    server.set(|s| s.total = 5);
    let files = source.fetch(landing.path(), "short").await.unwrap();
    assert_eq!(
        server.targets(),
        [
            "/offset?offset=0&limit=2",
            "/offset?offset=2&limit=2",
            "/offset?offset=4&limit=2",
        ]
    );
    assert_eq!(files.len(), 3);

    server.set(|s| {
        s.total = 4;
        s.targets.clear();
    });
    let files = source.fetch(landing.path(), "empty").await.unwrap();
    assert_eq!(server.requests(), 3, "0, 2, then 4 which is empty");
    assert_eq!(files.len(), 3);
}

#[tokio::test]
async fn page_pagination_needs_the_records_array() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        pagination: Pagination::Offset {
            param: "offset".into(),
            limit_param: "limit".into(),
            limit: 2,
        },
        records_at: "/people".into(),
        ..server.source("/offset")
    };
    let e = source.fetch(landing.path(), "w").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no records array at JSON pointer \"/people\""),
        "{e}"
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn link_headers_are_followed() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        pagination: Pagination::LinkHeader,
        ..server.source("/linked")
    };
    let files = source.fetch(landing.path(), "linked").await.unwrap();
    assert_eq!(
        server.targets(),
        ["/linked", "/linked?page=2", "/linked?page=3"],
        "relative links resolved against the page; rel=last and rel=prev ignored"
    );
    let sent = server.state.lock().unwrap().sent.clone();
    assert_eq!(check_pages(&files, &sent).len(), 9);
}

#[tokio::test]
async fn an_api_key_goes_in_its_header() {
    let server = Server::start(&[]).await;
    server.set(|s| s.expect = Some(("x-api-key".into(), "k-8f2d-not-real".into())));
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        auth: Auth::ApiKey {
            header: "X-Api-Key".into(),
            key: Secret::new("k-8f2d-not-real"),
        },
        headers: vec![("Accept".into(), "application/json".into())],
        ..server.source("/workers?page=1")
    };
    let files = source.fetch(landing.path(), "keyed").await.unwrap();
    assert_eq!(files.len(), 3);
    let headers = server.state.lock().unwrap().headers.clone();
    assert!(headers.iter().all(|h| {
        h.iter()
            .any(|(k, v)| k == "accept" && v == "application/json")
            && !h.iter().any(|(k, _)| k == "authorization")
    }));
}

#[tokio::test]
async fn a_token_read_from_a_secret_file_is_used_without_its_newline() {
    let server = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, format!("{TOKEN}\n")).unwrap();
    let source = HttpSource {
        auth: Auth::Bearer {
            token: Secret::from_file(&secret_file).unwrap(),
        },
        ..server.source("/workers?page=1")
    };
    let landing = dir.path().join("landing");
    let files = source.fetch(&landing, "w").await.unwrap();
    assert_eq!(files.len(), 3, "landing folder created, all pages in");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_pull_with_more_pages_than_allowed_fails_rather_than_stopping_short() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        max_pages: 2,
        ..server.source("/workers?page=1")
    };
    let e = source.fetch(landing.path(), "w").await.unwrap_err();
    assert_eq!(server.requests(), 2);
    assert!(e.to_string().contains("more than 2 pages"), "{e}");
    assert!(listing(landing.path()).is_empty());
}

#[tokio::test]
async fn next_links_to_another_site_are_not_followed() {
    let server = Server::start(&[]).await;
    server.set(|s| s.link_host = format!("localhost:{}", s.link_host.rsplit(':').next().unwrap()));
    let landing = tempfile::tempdir().unwrap();
    let e = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap_err();
    assert_eq!(
        server.requests(),
        1,
        "the token never went to the other origin"
    );
    assert!(e.to_string().contains("another site"), "{e}");
}

#[tokio::test]
async fn a_404_in_the_middle_of_a_pull_fails_at_once_and_the_pull_is_undone() {
    let server = Server::start(&[(3, Fault::NotFound)]).await;
    let landing = tempfile::tempdir().unwrap();
    let e = server
        .source("/workers?page=1")
        .fetch(landing.path(), "w")
        .await
        .unwrap_err();
    assert_eq!(server.requests(), 3, "not retried");
    assert!(
        e.to_string()
            .contains("/workers?page=3: HTTP 404 Not Found"),
        "{e}"
    );
    assert!(listing(landing.path()).is_empty(), "pages 1 and 2 removed");
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_redacted_urls_and_attempts_but_never_bodies_or_secrets() {
    // A global subscriber: a thread-local one misses events whose call sites other tests'
    // threads reached first. So this sink sees every test's logs, and the secrets and bodies
    // of all of them are looked for; the lines of this test are told apart by its port.
    let logs = Logs::default();
    let sink = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish(),
    )
    .expect("only this test sets the global subscriber");
    let server = Server::start(&[(1, Fault::ServerError), (2, Fault::Truncated)]).await;
    let landing = tempfile::tempdir().unwrap();
    server
        .source("/workers?page=1&access_token=query-secret-77")
        .fetch(landing.path(), "w")
        .await
        .unwrap();
    let all = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let here = format!("127.0.0.1:{}/", server.addr.port());
    let text: String = all
        .lines()
        .filter(|l| l.contains(&here))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        text.contains("request failed; retrying") && text.contains("attempt=1"),
        "{text}"
    );
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(
        text.contains("reading the body"),
        "the cut is seen as such: {text}"
    );
    assert!(text.contains("access_token=***"), "{text}");
    assert_eq!(text.matches("fetched a page").count(), 3, "{text}");
    for never in [
        TOKEN,
        "query-secret-77",
        "plain-key-9876",
        "wrong-token-5150",
        "k-8f2d-not-real",
        "Penhallow",
        "W0001",
    ] {
        assert!(!all.contains(never), "{never} in the logs:\n{all}");
    }
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_configured_site() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let files = server
        .source("/moved")
        .fetch(landing.path(), "moved")
        .await
        .unwrap();
    assert_eq!(server.targets(), ["/moved", "/workers?page=3"]);
    assert_eq!(files.len(), 1, "page 3 has no next link");

    server.set(|s| s.targets.clear());
    let e = server
        .source("/elsewhere")
        .fetch(landing.path(), "elsewhere")
        .await
        .unwrap_err();
    assert_eq!(server.targets(), ["/elsewhere"], "the token stayed here");
    assert!(
        matches!(http_error(&e), HttpError::Redirect { status: 302, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("redirect to another site"), "{e}");
}

#[tokio::test]
async fn basic_auth_is_sent_as_such() {
    let server = Server::start(&[]).await;
    server.set(|s| {
        s.expect = Some((
            "authorization".into(),
            "Basic c3ZjLW5vcnRoc2hpcmU6cGE1NS13MHJkLW5vdC1yZWFs".into(),
        ))
    });
    let landing = tempfile::tempdir().unwrap();
    let source = HttpSource {
        auth: Auth::Basic {
            user: "svc-northshire".into(),
            password: Secret::new("pa55-w0rd-not-real"),
        },
        ..server.source("/workers?page=1")
    };
    assert_eq!(source.fetch(landing.path(), "w").await.unwrap().len(), 3);

    let wrong = HttpSource {
        auth: Auth::Basic {
            user: "svc-northshire".into(),
            password: Secret::new("not-the-password"),
        },
        ..source
    };
    let e = wrong.fetch(landing.path(), "x").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("refused the credentials (basic auth as user svc-northshire)"),
        "{e}"
    );
    assert!(!e.to_string().contains("not-the-password"));
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn a_page_larger_than_max_page_bytes_fails_the_pull_without_reading_it_all() {
    let server = Server::start(&[]).await;
    let landing = tempfile::tempdir().unwrap();
    let mut source = server.source("/workers?page=1");
    source.max_page_bytes = 100;
    let e = source.fetch(landing.path(), "w").await.unwrap_err();
    assert!(
        matches!(
            http_error(&e),
            HttpError::PageTooLarge {
                max_page_bytes: 100
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("http.max_page_bytes"), "{e}");
    assert_eq!(server.requests(), 1, "not retried");
    assert!(listing(landing.path()).is_empty());
}
