//! SFTP pull against a real OpenSSH `sshd` that each test starts on a free 127.0.0.1 port, with
//! its own host key, sshd_config, a test user (`cbsftp`, created when missing) and a chroot
//! (internal-sftp). Needs root and Debian's openssh-server: the tests fail, saying so, without
//! them (`apt-get install -y openssh-server`; scripts/test.sh installs it).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Consumer, Sandbox, broker_url, stdout};
use council_bridge::sources::http::Secret;
use council_bridge::sources::sftp::{self, AfterStore, SftpAuth, SftpError, SftpSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SSHD: &str = "/usr/sbin/sshd";
const USER: &str = "cbsftp";
const PASSWORD: &str = "Sftp-test-pw-41f7";
const PASSPHRASE: &str = "key-passphrase-9c2e";
/// Folders of the running sshds (root-owned, as ChrootDirectory requires all the way up).
const BASE: &str = "/srv/council-bridge-sftp-tests";

static USER_LOCK: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The test user, created if missing, with a known password (idempotent).
fn ensure_user() {
    let _guard = USER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ]));
    }
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "chpasswd failed");
}

fn chown(path: &Path, user: &str) {
    run(Command::new("chown").arg(user).arg(path));
}

/// A running sshd with its own host key, a chroot holding `/outbound` and `/archive`, and a
/// passphrase-protected client key authorised for the test user.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// The chroot (remote `/`).
    root: PathBuf,
    /// `ssh-ed25519 AAAA...` of the host key.
    host_key: String,
    /// `ecdsa-sha2-nistp256 AAAA...` of its second host key.
    ecdsa_key: String,
    /// The client's private key file.
    client_key: PathBuf,
}

impl Sshd {
    fn start() -> Self {
        assert!(
            Path::new(SSHD).is_file(),
            "these tests need OpenSSH's sshd at {SSHD}: install it with `apt-get update && apt-get install -y openssh-server` (scripts/test.sh does this)"
        );
        let uid = run(Command::new("id").arg("-u")).stdout;
        assert_eq!(
            String::from_utf8_lossy(&uid).trim(),
            "0",
            "these tests need root: they create the test user {USER} and a chroot owned by root"
        );
        ensure_user();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = PathBuf::from(BASE).join(uuid::Uuid::new_v4().simple().to_string());
        let root = dir.join("root");
        let etc = dir.join("etc");
        for d in [&dir, &root, &etc] {
            std::fs::create_dir_all(d).unwrap();
            run(Command::new("chmod").arg("755").arg(d));
        }
        run(Command::new("chmod").arg("755").arg(BASE));
        for d in ["outbound", "archive"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            chown(&root.join(d), USER);
        }
        let host = etc.join("host_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f"])
            .arg(&host));
        let ecdsa = etc.join("host_ecdsa");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-C", "test-host", "-f"])
            .arg(&ecdsa));
        let client_key = etc.join("client_ed25519");
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                PASSPHRASE,
                "-C",
                "council-bridge",
                "-f",
            ])
            .arg(&client_key));
        let authorized = etc.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        run(Command::new("chmod").arg("644").arg(&authorized));
        let public = |key: &Path| {
            std::fs::read_to_string(key.with_extension("pub"))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (host_key, ecdsa_key) = (public(&host), public(&ecdsa));

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = etc.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nHostKey {ecdsa}\nPidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\nStrictModes no\nUsePAM no\n\
                 PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin no\nAllowUsers {USER}\nAllowTcpForwarding no\nX11Forwarding no\n\
                 Subsystem sftp internal-sftp\nChrootDirectory {root}\nForceCommand internal-sftp\n\
                 LogLevel VERBOSE\n",
                host = host.display(),
                ecdsa = ecdsa.display(),
                pid = etc.join("sshd.pid").display(),
                authorized = authorized.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(etc.join("sshd.log")).unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "sshd exited at once ({status}): {}",
                    std::fs::read_to_string(etc.join("sshd.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd {
            child,
            port,
            dir,
            root,
            host_key,
            ecdsa_key,
            client_key,
        }
    }

    /// Puts a file in the remote `/outbound` folder, owned by the test user.
    fn put(&self, name: &str, bytes: &[u8]) {
        let path = self.root.join("outbound").join(name);
        std::fs::write(&path, bytes).unwrap();
        chown(&path, USER);
    }

    fn remote(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn known_hosts(&self, key: &str) -> PathBuf {
        let path = self
            .dir
            .join("etc")
            .join(format!("known_hosts_{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &path,
            format!(
                "# test\n[127.0.0.1]:{} {key}\nother.example {key}\n",
                self.port
            ),
        )
        .unwrap();
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etc/sshd.log")).unwrap_or_default()
    }

    /// A source with the passphrase-protected key and the host key pinned.
    fn source(&self) -> SftpSource {
        SftpSource {
            host: "127.0.0.1".into(),
            port: self.port,
            user: USER.into(),
            auth: SftpAuth::Key {
                key: Secret::from_file(&self.client_key).unwrap(),
                passphrase: Some(Secret::new(PASSPHRASE)),
            },
            known_hosts: None,
            host_key: Some(self.host_key.clone()),
            remote_dir: "/outbound".into(),
            pattern: "*.csv".into(),
            settle: Duration::ZERO,
            require_marker: false,
            after_store: AfterStore::Leave,
            timeout: Duration::from_secs(10),
            max_attempts: 1,
            first_backoff: Duration::from_millis(100),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != sftp::WORK_DIR)
        .collect();
    names.sort();
    names
}

fn sftp_error(e: &council_bridge::sources::SourceError) -> &SftpError {
    match e {
        council_bridge::sources::SourceError::Io { source, .. } => source
            .get_ref()
            .and_then(|s| s.downcast_ref::<SftpError>())
            .unwrap_or_else(|| panic!("not an SFTP error: {e}")),
        other => panic!("not an SFTP error: {other}"),
    }
}

/// Northshire's council.yaml with the payroll (or HR) feed pulled over SFTP.
fn sftp_council(sandbox: &Sandbox, feed_yaml: &str) {
    std::fs::write(
        sandbox.path("mappings/northshire/council.yaml"),
        format!(
            "council: northshire\nname: Northshire County Council\nfeeds:\n{feed_yaml}\n  supplier-payments:\n    mapping: supplier_payment.yaml\n    input: samples/ap/*.csv\n    settle_seconds: 0\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_council_payroll_export_goes_over_sftp_with_key_auth_to_rabbitmq_and_is_archived_remotely_only_after_it_is_stored()
 {
    let sshd = Sshd::start();
    let sample = std::fs::read(
        common::repo().join("mappings/northshire/samples/payroll/payroll_202610.csv"),
    )
    .unwrap();
    sshd.put("payroll_202610.csv", &sample);
    sshd.put("notes.txt", b"not matched by the glob");
    let sandbox = Sandbox::new();
    let known_hosts = sshd.known_hosts(&sshd.host_key);
    let passphrase = sandbox.path("passphrase");
    std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    sftp_council(
        &sandbox,
        &format!(
            "  payroll:\n    mapping: payroll.yaml\n    settle_seconds: 1\n    sftp:\n      host: 127.0.0.1\n      port: {port}\n      user: {USER}\n      private_key: {{ file: {key} }}\n      passphrase: {{ file: {pp} }}\n      known_hosts: {kh}\n      remote_dir: /outbound\n      glob: \"payroll_*.csv\"\n      remote_archive: /archive\n      landing: landing/payroll\n",
            port = sshd.port,
            key = sshd.client_key.display(),
            kh = known_hosts.display(),
            pp = passphrase.display(),
        ),
    );
    let landing = sandbox.path("mappings/northshire/landing/payroll");

    // Pulled, but not yet stored: the remote file stays where it is.
    let config = council_bridge::config::Config::load(&sandbox.config()).unwrap();
    let pulls = council_bridge::pipeline::pull(&config, Some("northshire"), Some("payroll")).await;
    assert_eq!(pulls.len(), 1);
    assert!(pulls[0].error.is_none(), "{pulls:?}\n{}", sshd.log());
    assert_eq!(pulls[0].pages, 1, "{pulls:?}");
    assert_eq!(files(&landing), vec!["payroll_202610.csv"]);
    assert_eq!(
        std::fs::read(landing.join("payroll_202610.csv")).unwrap(),
        sample
    );
    let cleaned =
        council_bridge::pipeline::finish_pulls(&config, Some("northshire"), Some("payroll")).await;
    assert!(cleaned.is_empty(), "{cleaned:?}");
    assert_eq!(
        sshd.remote("outbound"),
        vec!["notes.txt", "payroll_202610.csv"],
        "not stored yet: the remote file stays"
    );
    assert!(sshd.remote("archive").is_empty());

    // `run`: the landed file is not downloaded again; it is read, stored, published; then the
    // remote file goes to the remote archive.
    let mut consumer = Consumer::bind(&sandbox).await;
    let started = Instant::now();
    let out = sandbox
        .cli(Some(&broker_url()))
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    let text = stdout(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{stderr}");
    assert!(
        text.contains("pulled 0 file(s) over SFTP"),
        "already landed, not downloaded again: {text}"
    );
    assert!(
        text.contains("payroll_202610.csv  processed: read 15, valid 13, rejected 2"),
        "{text}"
    );
    assert!(
        text.contains("1 remote file(s) moved or removed now that their batches are stored"),
        "{text}"
    );
    assert_eq!(sshd.remote("outbound"), vec!["notes.txt"]);
    let archived = sshd.remote("archive");
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].ends_with("_payroll_202610.csv"), "{archived:?}");
    assert_eq!(
        std::fs::read(sshd.root.join("archive").join(&archived[0])).unwrap(),
        sample,
        "moved, not altered"
    );
    for secret in [PASSPHRASE, "OPENSSH PRIVATE KEY"] {
        assert!(
            !text.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
    let got = consumer.drain_published().await;
    assert_eq!(got.len(), 14, "13 pay results and the batch manifest");
    assert_eq!(
        got.iter()
            .filter(|m| m.routing_key.starts_with("payroll.pay_result."))
            .count(),
        13
    );
    eprintln!("run over SFTP took {:?}", started.elapsed());

    // Nothing new: nothing pulled, nothing published.
    let again = sandbox
        .cli(Some(&broker_url()))
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    assert!(stdout(&again).contains("pulled 0 file(s) over SFTP"));
    assert!(consumer.drain_published().await.is_empty());
    consumer.cleanup().await;
}

#[tokio::test]
async fn password_auth_with_a_pinned_host_key_lands_the_file_and_delete_removes_it_once_stored() {
    let sshd = Sshd::start();
    sshd.put("a.csv", b"id\n1\n");
    sshd.put("b.csv", b"id\n2\n");
    sshd.put("b.csv.done", b"");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let mut source = sshd.source();
    source.auth = SftpAuth::Password {
        password: Secret::from_file(&pw).unwrap(),
    };
    source.after_store = AfterStore::Delete;
    source.require_marker = true;
    let landing = dir.path().join("landing");
    let pull = source
        .pull(&landing)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(
        pull.landed
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        vec!["b.csv"],
        "only the marked file"
    );
    assert_eq!(pull.waiting.len(), 1);
    assert!(
        pull.waiting[0].reason.contains("marker"),
        "{:?}",
        pull.waiting
    );
    assert_eq!(std::fs::read(landing.join("b.csv")).unwrap(), b"id\n2\n");

    // Not stored yet: finishing leaves the remote file alone.
    assert!(source.finish(&landing).await.unwrap().is_empty());
    assert_eq!(
        sshd.remote("outbound"),
        vec!["a.csv", "b.csv", "b.csv.done"]
    );
    let raw = &pull.landed[0];
    assert!(sftp::mark_stored(&landing, "b.csv", &raw.sha256, true).unwrap());
    assert_eq!(
        source.finish(&landing).await.unwrap(),
        vec!["/outbound/b.csv"]
    );
    assert_eq!(
        sshd.remote("outbound"),
        vec!["a.csv"],
        "file and marker removed"
    );

    // A wrong password is refused, and never shown.
    source.auth = SftpAuth::Password {
        password: Secret::new("wrong-pw-value-77"),
    };
    let e = source.pull(&landing).await.unwrap_err();
    assert!(
        matches!(sftp_error(&e), SftpError::AuthRefused { .. }),
        "{e}"
    );
    let shown = format!("{e} {e:?} {source:?}");
    assert!(
        shown.contains("refused the password for user cbsftp"),
        "{shown}"
    );
    for secret in ["wrong-pw-value-77", PASSWORD] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }

    // A wrong passphrase for the key: a clear refusal, without the passphrase or the key.
    source.auth = SftpAuth::Key {
        key: Secret::from_file(&sshd.client_key).unwrap(),
        passphrase: Some(Secret::new("wrong-passphrase-5e1")),
    };
    let e = source.pull(&landing).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("private key cannot be used"), "{shown}");
    for secret in ["wrong-passphrase-5e1", PASSPHRASE, "PRIVATE KEY"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[tokio::test]
async fn an_unknown_or_changed_host_key_is_refused_and_nothing_is_downloaded() {
    let sshd = Sshd::start();
    sshd.put("a.csv", b"id\n1\n");
    let other = tempfile::tempdir().unwrap();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k")));
    let other_key = std::fs::read_to_string(other.path().join("k.pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");

    // known_hosts that lists other hosts only: unknown.
    let mut source = sshd.source();
    source.host_key = None;
    let unrelated = dir.path().join("known_hosts_unrelated");
    std::fs::write(&unrelated, format!("[127.0.0.1]:1 {}\n", sshd.host_key)).unwrap();
    source.known_hosts = Some(unrelated);
    let e = source.pull(&landing).await.unwrap_err();
    assert!(
        matches!(sftp_error(&e), SftpError::UnknownHostKey { .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("not known")
            && text.contains("SHA256:")
            && text.contains("nothing was downloaded"),
        "{text}"
    );

    // known_hosts with another key for this host and port: changed.
    source.known_hosts = Some(sshd.known_hosts(&other_key));
    let e = source.pull(&landing).await.unwrap_err();
    assert!(
        matches!(sftp_error(&e), SftpError::ChangedHostKey { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("CHANGED") && e.to_string().contains("line 2"),
        "{e}"
    );

    // A different pinned key: changed.
    let mut pinned = sshd.source();
    pinned.host_key = Some(other_key.clone());
    let e = pinned.pull(&landing).await.unwrap_err();
    assert!(
        matches!(sftp_error(&e), SftpError::ChangedHostKey { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("pinned host_key"), "{e}");

    // Neither: refused before connecting.
    let mut neither = sshd.source();
    neither.host_key = None;
    let e = neither.pull(&landing).await.unwrap_err();
    assert!(e.to_string().contains("configure `known_hosts`"), "{e}");

    assert!(files(&landing).is_empty(), "nothing downloaded");
    let work: Vec<_> = std::fs::read_dir(landing.join(sftp::WORK_DIR))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(work.is_empty(), "not even a partial file: {work:?}");
    assert!(
        !sshd
            .log()
            .contains(&format!("Accepted publickey for {USER}")),
        "never authenticated: {}",
        sshd.log()
    );

    // The server's other key (ECDSA) in known_hosts: it is asked for that type, and accepted.
    source.known_hosts = Some(sshd.known_hosts(&sshd.ecdsa_key));
    let pull = source.pull(&landing).await.unwrap();
    assert_eq!(pull.landed.len(), 1);
}

/// Forwards 127.0.0.1:<port> to the sshd; cuts the first connection once `cut_after` bytes
/// have gone from the server to the client; later connections pass. Returns the port, the
/// number of cuts and the server-to-client bytes of each connection.
async fn cutting_proxy(
    upstream: u16,
    cut_after: u64,
) -> (u16, Arc<AtomicU64>, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicU64::new(0));
    let per_connection = Arc::new(Mutex::new(Vec::new()));
    let (cuts_out, per_out) = (cuts.clone(), per_connection.clone());
    let first = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let cut = first.swap(false, Ordering::SeqCst);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let index = {
                let mut v = per_connection.lock().unwrap();
                v.push(0);
                v.len() - 1
            };
            let (cuts, per) = (cuts.clone(), per_connection.clone());
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0u64;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    total += n as u64;
                    per.lock().unwrap()[index] = total;
                    if cut && total > cut_after {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
                // Dropping both halves closes the connection both ways.
                up.abort();
            });
        }
    });
    (port, cuts_out, per_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_download_is_resumed_by_the_next_pull_without_a_duplicate_or_a_lost_file()
 {
    let sshd = Sshd::start();
    // A large HR export: 4,000 employees (about 900 KB).
    let sample = std::fs::read_to_string(
        common::repo().join("mappings/northshire/samples/hr/employees_20261101.csv"),
    )
    .unwrap();
    let mut lines = sample.lines();
    let header = lines.next().unwrap();
    let template = lines.next().unwrap();
    let rest = template.split_once(',').unwrap().1;
    const ROWS: usize = 4000;
    let mut csv = format!("{header}\r\n");
    for i in 0..ROWS {
        csv.push_str(&format!("{:06},{rest}\r\n", 500_000 + i));
    }
    sshd.put("employees_20261201.csv", csv.as_bytes());
    let size = csv.len() as u64;

    let (port, cuts, per_connection) = cutting_proxy(sshd.port, size / 3).await;
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("mappings/northshire/host_key"),
        format!("[127.0.0.1]:{port} {}\n", sshd.host_key),
    )
    .unwrap();
    sftp_council(
        &sandbox,
        &format!(
            "  hr-employees:\n    mapping: hr_employee.yaml\n    settle_seconds: 0\n    sftp:\n      host: 127.0.0.1\n      port: {port}\n      user: {USER}\n      password: {{ env: CB_TEST_SFTP_PASSWORD }}\n      known_hosts: host_key\n      remote_dir: /outbound\n      glob: \"employees_*.csv\"\n      remote_archive: /archive\n      max_attempts: 1\n      timeout_secs: 5\n      landing: landing/hr\n",
        ),
    );
    let landing = sandbox.path("mappings/northshire/landing/hr");
    let mut consumer = Consumer::bind(&sandbox).await;
    let cli = |sandbox: &Sandbox| {
        let mut c = sandbox.cli(Some(&broker_url()));
        c.env("CB_TEST_SFTP_PASSWORD", PASSWORD).args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "hr-employees",
        ]);
        c
    };

    // The connection is cut a third of the way through: the pull fails, nothing is read, the
    // partial download waits hidden, the remote file stays.
    let started = Instant::now();
    let first = cli(&sandbox).output().unwrap();
    let text = stdout(&first);
    assert_eq!(first.status.code(), Some(1), "{text}");
    assert!(
        text.contains("PULL FAILED") && text.contains("gave up after 1 attempts"),
        "{text}"
    );
    assert!(text.contains("no files waiting"), "{text}");
    assert_eq!(cuts.load(Ordering::SeqCst), 1);
    assert!(
        files(&landing).is_empty(),
        "nothing half-written in the landing folder"
    );
    let part = landing
        .join(sftp::WORK_DIR)
        .join("employees_20261201.csv.part");
    let partial = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        partial > 0 && partial < size,
        "partial {partial} of {size}: {text}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(sshd.remote("outbound"), vec!["employees_20261201.csv"]);

    // The next pull resumes from the partial file's length.
    let second = cli(&sandbox).output().unwrap();
    let text = stdout(&second);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        text.contains(&format!(
            "employees_20261201.csv resumed from byte {partial}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "employees_20261201.csv  processed: read {ROWS}, valid {ROWS}"
        )),
        "{text}"
    );
    let bytes = per_connection.lock().unwrap().clone();
    assert!(
        bytes[1] < size - partial / 2,
        "the second connection carried only the rest of the file: {bytes:?}, size {size}, partial {partial}"
    );
    assert_eq!(
        std::fs::read(landing.join("employees_20261201.csv")).unwrap(),
        csv.as_bytes(),
        "resumed bytes join up exactly"
    );
    assert!(sshd.remote("outbound").is_empty());
    assert_eq!(sshd.remote("archive").len(), 1);

    let got = consumer.drain_published().await;
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(got.len(), ROWS + 1, "every employee once, and the manifest");
    assert_eq!(ids.len(), ROWS + 1, "no duplicate");

    // Again: nothing pulled, nothing published.
    let third = cli(&sandbox).output().unwrap();
    assert_eq!(third.status.code(), Some(0), "{}", stdout(&third));
    assert!(consumer.drain_published().await.is_empty());
    eprintln!(
        "dropped-connection scenario took {:?} (bytes per connection {bytes:?}, file {size})",
        started.elapsed()
    );
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_growing_is_not_taken_until_two_looks_agree_and_a_cut_is_retried_within_the_pull()
 {
    let sshd = Sshd::start();
    sshd.put("growing.csv", b"id\n1\n");
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let mut source = sshd.source();
    source.settle = Duration::from_millis(1500);
    let path = sshd.root.join("outbound/growing.csv");
    // The sender is still uploading: a line every 100 ms until the first pull is over.
    let uploading = Arc::new(AtomicBool::new(true));
    let still = uploading.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 2;
        while still.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut f, format!("{i}\n").as_bytes()).unwrap();
            i += 1;
        }
    });
    let pull = source.pull(&landing).await.unwrap();
    uploading.store(false, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(pull.landed.is_empty(), "{pull:?}");
    assert_eq!(pull.waiting.len(), 1);
    assert!(
        pull.waiting[0].reason.contains("changed"),
        "{:?}",
        pull.waiting
    );
    assert!(files(&landing).is_empty());

    let pull = source.pull(&landing).await.unwrap();
    assert_eq!(pull.landed.len(), 1, "unchanged across two looks: {pull:?}");
    assert_eq!(
        std::fs::read(landing.join("growing.csv")).unwrap(),
        std::fs::read(sshd.root.join("outbound/growing.csv")).unwrap()
    );
    let pull = source.pull(&landing).await.unwrap();
    assert!(
        pull.landed.is_empty(),
        "landed and unread: not downloaded again"
    );

    // A cut in the middle of a download: the pull's next attempt continues it.
    let big: Vec<u8> = (0..800_000u32).map(|i| (i % 251) as u8).collect();
    sshd.put("big.csv", &big);
    let (port, cuts, _) = cutting_proxy(sshd.port, 150_000).await;
    let mut source = sshd.source();
    source.port = port;
    source.host_key = None;
    source.known_hosts = Some(sshd.known_hosts(&sshd.host_key));
    std::fs::write(
        source.known_hosts.as_ref().unwrap(),
        format!("[127.0.0.1]:{port} {}\n", sshd.host_key),
    )
    .unwrap();
    source.pattern = "big.csv".into();
    source.max_attempts = 3;
    let pull = source.pull(&landing).await.unwrap();
    assert_eq!(cuts.load(Ordering::SeqCst), 1);
    assert_eq!(pull.landed.len(), 1);
    assert_eq!(pull.resumed.len(), 1, "{pull:?}");
    assert!(pull.resumed[0].1 > 0);
    assert_eq!(std::fs::read(landing.join("big.csv")).unwrap(), big);
}

#[test]
fn sftp_feeds_are_configured_with_safe_defaults_and_clear_errors() {
    let sandbox = Sandbox::new();
    let feed = |extra: &str| {
        format!(
            "  payroll:\n    mapping: payroll.yaml\n    sftp:\n      host: sftp.example\n      user: u\n      glob: \"*.csv\"\n      landing: landing/payroll\n{extra}"
        )
    };
    sftp_council(
        &sandbox,
        &feed(
            "      password: { env: CB_TEST_UNSET_SFTP_PW_8D1 }\n      host_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\"\n",
        ),
    );
    let config = council_bridge::config::Config::load(&sandbox.config()).unwrap();
    let f = &config.council("northshire").unwrap().feeds[0];
    let s = f.sftp.as_ref().unwrap();
    assert_eq!(
        (s.port, s.remote_dir.as_str(), s.settle_seconds),
        (22, ".", 10)
    );
    assert!(
        f.input
            .ends_with("mappings/northshire/landing/payroll/*.csv"),
        "{}",
        f.input
    );
    assert!(
        f.drop.settle.is_zero(),
        "landed files are complete: read at once"
    );
    let e = s.source().unwrap_err();
    assert!(
        e.contains("CB_TEST_UNSET_SFTP_PW_8D1") && e.contains("not set"),
        "{e}"
    );

    let pw = sandbox.path("pw");
    std::fs::write(&pw, "x\n").unwrap();
    for (extra, want) in [
        (
            format!(
                "      password: {{ file: {} }}\n      after_store: move\n",
                pw.display()
            ),
            "needs `remote_archive`",
        ),
        (
            "      host_key: x\n".to_string(),
            "needs `private_key` or `password`",
        ),
        (
            format!(
                "      password: {{ file: {p} }}\n      private_key: {{ file: {p} }}\n",
                p = pw.display()
            ),
            "not both",
        ),
    ] {
        sftp_council(&sandbox, &feed(&extra));
        let config = council_bridge::config::Config::load(&sandbox.config()).unwrap();
        let e = config
            .councils
            .iter()
            .find(|c| c.id == "northshire")
            .unwrap()
            .feeds[0]
            .sftp
            .as_ref()
            .unwrap()
            .source()
            .unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
    sftp_council(
        &sandbox,
        &feed(&format!(
            "      password: {{ file: {} }}\n      after_store: delete\n",
            pw.display()
        )),
    );
    let config = council_bridge::config::Config::load(&sandbox.config()).unwrap();
    let source = config.council("northshire").unwrap().feeds[0]
        .sftp
        .as_ref()
        .unwrap()
        .source()
        .unwrap();
    assert_eq!(source.after_store, AfterStore::Delete);
    assert!(!format!("{source:?}").contains("Secret(x"), "{source:?}");

    sftp_council(&sandbox, &feed("      http: { url: \"http://x\" }\n"));
    let e = council_bridge::config::Config::load(&sandbox.config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field") || e.contains("http"), "{e}");
}
