//! Test harness: a sandbox installation (config, mappings, schemas, store in a temp folder)
//! and a real RabbitMQ consumer. Tests that need the broker fail loudly when it is absent.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use council_bridge::amqp::{BrokerConfig, declare_topology};
use council_bridge::store::{Location, Store, db::Db};

/// The PostgreSQL server the suite runs its stores on when `COUNCIL_BRIDGE_TEST_STORE` is set to
/// a `postgres://` address (each sandbox then gets a fresh database of its own on that server);
/// unset or empty, stores are SQLite files in the sandbox.
pub fn test_store_server() -> Option<String> {
    std::env::var("COUNCIL_BRIDGE_TEST_STORE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            assert!(
                s.starts_with("postgres://") || s.starts_with("postgresql://"),
                "COUNCIL_BRIDGE_TEST_STORE must be a postgres:// address, not {s}"
            );
            s
        })
}

/// A PostgreSQL database made for one test (`cb_t_<pid>_<n>`), dropped with it.
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on `server`; fails loudly when the server is not there.
    pub fn create(server: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "cb_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // One connection for the three statements (each its own transaction: CREATE DATABASE
        // cannot run in one). `synchronous_commit = off` on the test's own database only: a
        // commit returns before its WAL reaches the disk, so it is lost only if the PostgreSQL
        // server itself crashes, which no test does; what every other session sees, and when,
        // is unchanged (a committed transaction is visible at once either way), so the tests
        // assert the same things, without waiting for an fsync per commit on a busy disk.
        admin(
            server,
            &[
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                &format!("CREATE DATABASE {name} TEMPLATE template0"),
                &format!("ALTER DATABASE {name} SET synchronous_commit = off"),
            ],
        );
        let mut url = url::Url::parse(server).expect("COUNCIL_BRIDGE_TEST_STORE parses");
        url.set_path(&name);
        TestDatabase {
            server: server.to_string(),
            name,
            url: url.to_string(),
        }
    }

    /// Its address.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, sql) = (
            self.server.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        // Not a panic while unwinding: a database left behind only costs disk.
        council_bridge::store::db::off_async(move || {
            if let Err(e) = Db::open_postgres(&server).and_then(|mut db| db.execute_batch(&sql)) {
                eprintln!("could not drop the test database: {e}");
            }
        });
    }
}

/// Runs `statements` one after the other on one connection to `server`.
fn admin(server: &str, statements: &[&str]) {
    council_bridge::store::db::off_async(|| {
        let mut db = Db::open_postgres(server).unwrap_or_else(|e| {
            panic!("COUNCIL_BRIDGE_TEST_STORE is set but PostgreSQL is not reachable at {server}: {e}. Start it with `pg_ctlcluster $(ls /etc/postgresql) main start`.")
        });
        for sql in statements {
            db.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    })
}

/// A store for a test that is not in a sandbox: the SQLite file `path`, or, under
/// `COUNCIL_BRIDGE_TEST_STORE`, a fresh PostgreSQL database (dropped with the value).
pub struct TestStore {
    pub store: Store,
    _database: Option<TestDatabase>,
}

impl std::ops::Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Opens a test's store: at `path` (SQLite), or in a fresh PostgreSQL database when
/// `COUNCIL_BRIDGE_TEST_STORE` is set. Every test that opens a store goes through here or
/// through [`Sandbox::open_store`].
pub fn test_store(path: &Path) -> TestStore {
    match test_store_server() {
        None => TestStore {
            store: Store::open(path).unwrap(),
            _database: None,
        },
        Some(server) => {
            let database = TestDatabase::create(&server);
            TestStore {
                store: Store::open(database.url()).unwrap(),
                _database: Some(database),
            }
        }
    }
}

/// The broker the tests use (AMQP_TEST_URL overrides).
pub fn broker_url() -> String {
    std::env::var("AMQP_TEST_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A private installation: its own copy of mappings and schemas, its own store and its own
/// exchange names, so tests run in parallel against one broker without seeing each other.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub exchange: String,
    pub dlx: String,
    pub dlq: String,
    /// The sandbox's PostgreSQL database (under `COUNCIL_BRIDGE_TEST_STORE`).
    pub database: Option<TestDatabase>,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("mappings"), &dir.path().join("mappings"));
        copy_dir(&repo().join("schemas"), &dir.path().join("schemas"));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let exchange = format!("cb-test-{id}.events");
        let dlx = format!("cb-test-{id}.dlx");
        let dlq = format!("cb-test-{id}.dead-letters");
        let database = test_store_server().map(|server| TestDatabase::create(&server));
        let store = database.as_ref().map_or("var/test.db", |d| d.url());
        std::fs::write(
            dir.path().join("council-bridge.yaml"),
            format!(
                "store: {store}\nmappings: mappings\nschemas: schemas\nbroker:\n  retry_seconds: 3\n  exchange: {exchange}\n  dead_letter_exchange: {dlx}\n  dead_letter_queue: {dlq}\n"
            ),
        )
        .unwrap();
        Sandbox {
            dir,
            exchange,
            dlx,
            dlq,
            database,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("council-bridge.yaml")
    }

    /// The sandbox's store: its SQLite file, or its PostgreSQL database.
    pub fn store_location(&self) -> Location {
        match &self.database {
            Some(d) => Location::parse(d.url()),
            None => Location::Sqlite(self.path("var/test.db")),
        }
    }

    /// The `store:` setting the sandbox's configuration has (for tests that write their own).
    pub fn store_setting(&self) -> String {
        match &self.database {
            Some(d) => d.url().to_string(),
            None => "var/test.db".into(),
        }
    }

    /// Opens the sandbox's store.
    pub fn open_store(&self) -> Store {
        Store::open(self.store_location()).unwrap()
    }

    /// A raw connection to the sandbox's store, for tests that look at its tables.
    pub fn open_db(&self) -> Db {
        match self.store_location() {
            Location::Sqlite(p) => Db::open_sqlite(&p).unwrap(),
            Location::Postgres(url) => {
                council_bridge::store::db::off_async(|| Db::open_postgres(&url)).unwrap()
            }
        }
    }

    pub fn broker(&self, url: &str) -> BrokerConfig {
        let mut b = BrokerConfig::new(url);
        b.exchange = self.exchange.clone();
        b.dead_letter_exchange = self.dlx.clone();
        b.dead_letter_queue = self.dlq.clone();
        b.connection_name = format!("test {}", self.exchange);
        b
    }

    /// The CLI, pointed at this sandbox, with no broker unless `url` is given.
    pub fn cli(&self, url: Option<&str>) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("council-bridge").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("AMQP_URL")
            .env_remove("COUNCIL_BRIDGE_STORE")
            .env_remove("EASTBOROUGH_HR_API_URL")
            .env_remove("EASTBOROUGH_HR_API_TOKEN")
            .env("COUNCIL_BRIDGE_CONFIG", self.config())
            .env("COUNCIL_BRIDGE_ACTOR", "test-operator")
            .env("RUST_LOG", "info")
            .arg("--log-format")
            .arg("json");
        if let Some(u) = url {
            cmd.env("AMQP_URL", u);
        }
        cmd
    }
}

/// What a command printed on stdout.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Sandbox {
    /// Runs a command without a broker with `--json` and parses what it printed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(None).args(args).arg("--json").output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} did not print JSON ({e}): {}", stdout(&out)))
    }

    /// The open failures, as `failures list --json` shows them.
    pub fn failures(&self) -> Vec<serde_json::Value> {
        self.json(&["failures", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A message as the platform receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: String,
    pub correlation_id: String,
    pub delivery_mode: Option<u8>,
    pub content_type: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
}

/// A consumer bound to the sandbox's exchange with `#` before anything is published.
pub struct Consumer {
    conn: Connection,
    consumer: lapin::Consumer,
    queue: String,
    exchange: String,
    dlx: String,
    dlq: String,
}

impl Consumer {
    pub async fn bind(sandbox: &Sandbox) -> Self {
        let url = broker_url();
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ is required for this test and is not reachable at {url}: {e}. Start it with `rabbitmq-server -detached`."));
        let channel = conn.create_channel().await.unwrap();
        declare_topology(&channel, &sandbox.broker(&url))
            .await
            .unwrap();
        let queue = format!("{}.test-consumer", sandbox.exchange);
        bound_queue(
            &channel,
            &sandbox.exchange,
            &queue,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from("test"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Consumer {
            conn,
            consumer,
            queue,
            exchange: sandbox.exchange.clone(),
            dlx: sandbox.dlx.clone(),
            dlq: sandbox.dlq.clone(),
        }
    }

    /// Receives until `idle` passes with nothing new (or `max` messages).
    pub async fn drain(&mut self, idle: Duration, max: usize) -> Vec<Received> {
        let mut out = Vec::new();
        while out.len() < max {
            match tokio::time::timeout(idle, self.consumer.next()).await {
                Ok(Some(Ok(d))) => out.push(received(&d)),
                Ok(Some(Err(e))) => panic!("consumer error: {e}"),
                Ok(None) | Err(_) => break,
            }
        }
        out
    }

    /// Every message that reached the consumer's queue before this call, without waiting for a
    /// quiet spell: a marker message goes to the queue itself (default exchange) and the
    /// messages ahead of it are returned (a queue delivers in order). For a publisher that is
    /// done (its process ended, its flush returned): what it published was confirmed, so is in
    /// the queue ahead of the marker, duplicates included; to wait on a publisher still at work
    /// (a running daemon), use [`Consumer::drain`]. Panics when the marker does not come back
    /// within two minutes.
    pub async fn drain_published(&mut self) -> Vec<Received> {
        let marker = format!("cb-test-end-{}", uuid::Uuid::new_v4().simple());
        let ch = self.conn.create_channel().await.unwrap();
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.queue.as_str()),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"{}",
                lapin::BasicProperties::default()
                    .with_message_id(ShortString::from(marker.as_str())),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the end marker was not accepted");
        let _ = ch.close(200, ShortString::from("marker sent")).await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let r = received(&d);
                    if r.message_id == marker {
                        return out;
                    }
                    out.push(r);
                }
                Ok(Some(Err(e))) => panic!("consumer error: {e}"),
                Ok(None) => panic!("the consumer ended before the end marker came back"),
                Err(_) => panic!(
                    "the end marker did not come back within 120 s ({} messages before it)",
                    out.len()
                ),
            }
        }
    }

    /// Deletes the queue and the sandbox's exchanges.
    pub async fn cleanup(self) {
        let ch = self.conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(
                ShortString::from(self.queue.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = ch
            .queue_delete(
                ShortString::from(self.dlq.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = ch
            .exchange_delete(
                ShortString::from(self.exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = ch
            .exchange_delete(
                ShortString::from(self.dlx.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.conn.close(200, ShortString::from("done")).await;
    }
}

pub fn received(d: &lapin::message::Delivery) -> Received {
    let p = &d.properties;
    let mut headers = std::collections::BTreeMap::new();
    if let Some(h) = p.headers() {
        for (k, v) in h {
            let s = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::LongLongInt(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            headers.insert(k.to_string(), s);
        }
    }
    Received {
        routing_key: d.routing_key.to_string(),
        message_id: p
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        correlation_id: p
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        delivery_mode: *p.delivery_mode(),
        content_type: p.content_type().as_ref().map(|s| s.to_string()),
        headers,
        body: serde_json::from_slice(&d.data).expect("body is JSON"),
    }
}

/// A stand-in for Eastborough's HR API on 127.0.0.1: serves the sample pages in
/// mappings/eastborough/samples/api (next links pointing back at itself) to requests that carry
/// `Authorization: Bearer <token>`, 401 otherwise. Returns the first page's URL and a request
/// counter. Runs until the test's runtime ends; answers at most 100 requests.
pub async fn serve_hr_api(token: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let pages: Vec<String> = (1..=2)
        .map(|n| {
            std::fs::read_to_string(repo().join(format!(
                "mappings/eastborough/samples/api/workers_page{n}.json"
            )))
            .unwrap()
            .replace("{{BASE}}", &base)
        })
        .collect();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let (counter, expected) = (hits.clone(), format!("authorization: bearer {token}"));
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 8192];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_lowercase();
            let (status, body) = if !text.contains(&expected) {
                (
                    "401 Unauthorized",
                    "{\"error\":\"unauthorised\"}".to_string(),
                )
            } else if text.starts_with("get /hr/v1/workers?page=2 ") {
                ("200 OK", pages[1].clone())
            } else if text.starts_with("get /hr/v1/workers?page=1 ") {
                ("200 OK", pages[0].clone())
            } else {
                ("404 Not Found", "{}".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("{base}/hr/v1/workers?page=1"), hits)
}

/// Sends a signal (`STOP`, `CONT`, `TERM`...) to a process.
pub fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name} {pid}");
}

/// The platform's queue for a feed, as a consumer that rejects what it cannot take sets it up:
/// `<exchange>.platform-payroll`, bound on `#` to the sandbox's events exchange and
/// dead-lettering to the bridge's dead-letter exchange, after the bridge's topology is declared
/// (so the dead-letter queue exists). Returns the connection, its channel and the queue's name.
pub async fn platform_queue(
    sandbox: &Sandbox,
    url: &str,
    auto_delete: bool,
) -> (lapin::Connection, lapin::Channel, String) {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required at {url}: {e}"));
    let ch = conn.create_channel().await.unwrap();
    council_bridge::amqp::declare_topology(&ch, &sandbox.broker(url))
        .await
        .unwrap();
    let queue = format!("{}.platform-payroll", sandbox.exchange);
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(sandbox.dlx.as_str())),
    );
    let options = QueueDeclareOptions {
        auto_delete,
        ..Default::default()
    };
    bound_queue(&ch, &sandbox.exchange, &queue, options, args).await;
    (conn, ch, queue)
}

/// Declares `queue` and binds it on `#` to `exchange`: it receives everything published there.
pub async fn bound_queue(
    ch: &lapin::Channel,
    exchange: &str,
    queue: &str,
    options: lapin::options::QueueDeclareOptions,
    args: lapin::types::FieldTable,
) {
    use lapin::options::QueueBindOptions;
    use lapin::types::{FieldTable, ShortString};
    ch.queue_declare(ShortString::from(queue), options, args)
        .await
        .unwrap_or_else(|e| panic!("declare the queue {queue}: {e}"));
    ch.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("bind the queue {queue} to {exchange}: {e}"));
}

/// Rows per generated payroll file.
pub const ROWS: usize = 5_000;

/// Writes `files` Northshire payroll exports of `ROWS` rows each (Windows-1252, title row,
/// trailer with count and gross total), with employee numbers unique across all files from
/// `first`. Returns the number of detail rows written.
pub fn write_payroll(dir: &Path, tag: &str, first: usize, files: usize) -> usize {
    for f in 0..files {
        write_payroll_file(
            &dir.join(format!("payroll_{tag}_{f}.csv")),
            first + f * ROWS,
            ROWS,
        );
    }
    files * ROWS
}

/// Writes one Northshire payroll export of `rows` rows (as [`write_payroll`]) to `path`, with
/// employee numbers from `first`.
pub fn write_payroll_file(path: &Path, first: usize, rows: usize) {
    let sample =
        std::fs::read(repo().join("mappings/northshire/samples/payroll/payroll_202610.csv"))
            .unwrap();
    let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').collect();
    let (title, header, row) = (lines[0], lines[1], lines[2]);
    // The template row starts with employee number 010401 and has gross "£3,912.50".
    assert!(row.starts_with(b"010401,"));
    let rest = &row[6..];
    let mut out = Vec::with_capacity(rows * row.len() + 200);
    out.extend_from_slice(title);
    out.push(b'\n');
    out.extend_from_slice(header);
    out.push(b'\n');
    for i in 0..rows {
        out.extend_from_slice(format!("{:06}", first + i).as_bytes());
        out.extend_from_slice(rest);
        out.push(b'\n');
    }
    let total_pence = 391_250u64 * rows as u64;
    let pounds = total_pence / 100;
    let mut grouped = String::new();
    for (i, ch) in pounds.to_string().chars().enumerate() {
        let left = pounds.to_string().len() - i;
        if i > 0 && left.is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    out.extend_from_slice(format!("TRAILER,{rows},\"").as_bytes());
    out.push(0xA3); // the pound sign in Windows-1252
    out.extend_from_slice(format!("{grouped}.{:02}\"\r\n", total_pence % 100).as_bytes());
    std::fs::write(path, out).unwrap();
}

/// A sandbox whose Northshire payroll folder holds only generated files.
pub fn sandbox_with_payroll() -> Sandbox {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("mappings/northshire/samples/payroll");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    sandbox
}

/// Raw values of every column the mappings send to a personal-data field, less those that are
/// also part of public values (a town in a supplier's name is not a leak of an address): what a
/// log line, a failure view or a viewer's answer must never show.
pub fn personal_values(sandbox: &Sandbox) -> std::collections::BTreeSet<String> {
    use council_bridge::canonical::Registry;
    use council_bridge::config::Config;
    use council_bridge::formats::Item;
    let config = Config::load(&sandbox.config()).unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let mut values = std::collections::BTreeSet::new();
    let mut public = Vec::new();
    for council in &config.councils {
        for feed in &council.feeds {
            let mapping = council_bridge::mapping::load(&feed.mapping, &registry).unwrap();
            for path in feed.drop.scan().unwrap().0 {
                let file = std::fs::File::open(&path).unwrap();
                let decoder =
                    council_bridge::formats::open("x", file, &mapping.source.format).unwrap();
                for item in decoder {
                    if let Ok(Item::Record(r)) = item {
                        let binding = mapping.bind_for(&r.header).unwrap();
                        for (i, v) in r.values.iter().enumerate() {
                            let v = v.trim();
                            if binding.is_public_column(i) {
                                public.push(v.to_string());
                            } else if v.chars().count() >= 4 {
                                values.insert(v.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    values.retain(|v| !public.iter().any(|p| p.contains(v.as_str())));
    values
}

/// Forwards 127.0.0.1:<port> to RabbitMQ; drops every open connection once `cut_after` bytes
/// have gone from client to broker (once), and counts the cuts.
pub async fn cutting_proxy(cut_after: u64) -> (u16, std::sync::Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let cut_done = std::sync::Arc::new(AtomicBool::new(false));
    let cuts = std::sync::Arc::new(AtomicU64::new(0));
    let (kill, _) = broadcast::channel::<()>(4);
    let cuts_out = cuts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = TcpStream::connect("127.0.0.1:5672")
                .await
                .expect("RabbitMQ must be running on 127.0.0.1:5672");
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let (sent, cut_done, cuts, kill_tx) =
                (sent.clone(), cut_done.clone(), cuts.clone(), kill.clone());
            let mut kill_rx = kill.subscribe();
            let mut kill_rx2 = kill.subscribe();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    tokio::select! {
                        _ = kill_rx.recv() => return,
                        n = cr.read(&mut buf) => {
                            let Ok(n) = n else { return };
                            if n == 0 || uw.write_all(&buf[..n]).await.is_err() { return; }
                            let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                            if total > cut_after && !cut_done.swap(true, Ordering::SeqCst) {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                let _ = kill_tx.send(());
                                return;
                            }
                        }
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    tokio::select! {
                        _ = kill_rx2.recv() => return,
                        n = ur.read(&mut buf) => {
                            let Ok(n) = n else { return };
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() { return; }
                        }
                    }
                }
            });
        }
    });
    (port, cuts_out)
}
