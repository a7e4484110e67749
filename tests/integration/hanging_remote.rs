//! A remote that accepts connections and never answers must not hold
//! `stackctl up` past `shutdown_timeout` (issue 12, items 2 and 3): not at
//! start (during the restore), not mid-run (during a periodic snapshot),
//! not during the final snapshot. `up` exits by itself inside the budget:
//! 0, or 3 with "final backup failed".
//!
//! The remote is `git http-backend` ([`HttpGit`]) behind [`Proxy`], which
//! can be switched to swallow every new connection: accepted, never read,
//! never answered, held open. And a cancelled snapshot gives way between
//! files without leaving anything behind.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Running, Stack};
use crate::persist::HttpGit;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok-hanging-remote-42";
/// The stack's `shutdown_timeout`.
const BUDGET: Duration = Duration::from_secs(3);
/// Signal delivery, process exit and the test's own polling.
const SLACK: Duration = Duration::from_millis(300);

/// A TCP proxy to a backend port that, once told to hang, accepts every new
/// connection and never answers it.
struct Proxy {
    port: u16,
    hang: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward to `backend`, or hang from the start when it is `None`.
    fn start(backend: Option<u16>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hang = Arc::new(AtomicBool::new(backend.is_none()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (hang2, held2, stop2) = (hang.clone(), held.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                match backend {
                    Some(b) if !hang2.load(Ordering::SeqCst) => forward(client, b),
                    _ => held2.lock().unwrap().push(client),
                }
            }
        });
        Proxy {
            port,
            hang,
            held,
            stop,
        }
    }

    /// From now on, swallow every new connection.
    fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }

    /// Connections swallowed so far.
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Wait until a connection is swallowed: stackctl is waiting on it.
    /// `nudge` runs at once, then every half second until then.
    fn wait_held(&self, n: usize, up: &Running, mut nudge: impl FnMut()) {
        let deadline = Instant::now() + T;
        let mut next_nudge = Instant::now();
        while self.held() < n {
            if Instant::now() > deadline {
                up.fail(&format!("no connection #{n} reached the hanging remote"));
            }
            if Instant::now() >= next_nudge {
                nudge();
                next_nudge = Instant::now() + Duration::from_millis(500);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copy bytes both ways between `client` and the backend port.
fn forward(client: TcpStream, backend: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else {
        return;
    };
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

/// A stack persisting `./data` to `remote.git` over smart HTTP through
/// the proxy on `proxy_port`.
fn stack(proxy_port: u16) -> Stack {
    let s = Stack::new(&format!(
        r#"
name: hang
shutdown_timeout: {}ms
services:
  app:
    command: [sleep, "1000"]
    stop_timeout: 1s
persist:
  remote: http://127.0.0.1:{proxy_port}/remote.git
  token: {TOKEN}
  workdir: ./work
  debounce: 200ms
  interval: 1h
  paths: [./data]
"#,
        BUDGET.as_millis()
    ));
    std::fs::create_dir_all(s.path("data")).unwrap();
    s
}

/// A bare `remote.git` in a temp dir of its own (kept while the guard
/// lives) that accepts pushes over HTTP, served by `git http-backend`.
fn serve_remote() -> (tempfile::TempDir, HttpGit) {
    let root = tempfile::tempdir().unwrap();
    let remote = root.path().join("remote.git");
    crate::common_persist::init_bare(&remote);
    crate::common_persist::git(&remote, &["config", "http.receivepack", "true"]);
    let server = HttpGit::start(root.path(), TOKEN);
    (root, server)
}

/// `up` restored from a remote that answers, until its proxy hangs.
struct Live {
    // Dropped first: `up` stops before its remote goes away.
    up: Running,
    s: Stack,
    proxy: Proxy,
    _remote: (tempfile::TempDir, HttpGit),
}

impl Live {
    fn start() -> Live {
        let remote = serve_remote();
        let proxy = Proxy::start(Some(remote.1.port));
        let s = stack(proxy.port);
        let mut up = s.up();
        up.wait_for("restore finished", T);
        Live {
            up,
            s,
            proxy,
            _remote: remote,
        }
    }
}

/// SIGTERM now; the exit status and how long it took.
fn stop(up: &mut Running) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    up.signal(libc::SIGTERM);
    let status = up.wait_exit(BUDGET + T);
    (status.code(), t0.elapsed())
}

#[track_caller]
fn assert_within_budget(up: &Running, took: Duration) {
    if took >= BUDGET + SLACK {
        up.fail(&format!(
            "stopping took {took:?}: over `shutdown_timeout` ({BUDGET:?})"
        ));
    }
}

#[test]
fn a_remote_that_never_answers_during_the_restore_does_not_hold_up_a_stop() {
    let proxy = Proxy::start(None);
    let s = stack(proxy.port);
    let mut up = s.up();
    // The restore is waiting on the silent remote.
    proxy.wait_held(1, &up, || {});
    let (code, took) = stop(&mut up);
    assert_within_budget(&up, took);
    assert_eq!(code, Some(0), "{}", up.log());
    assert!(
        up.has_line("stopped before the restore finished"),
        "{}",
        up.log()
    );
}

#[test]
fn a_remote_that_stops_answering_mid_run_does_not_hold_up_a_stop() {
    let Live {
        mut up,
        s,
        proxy,
        _remote,
    } = Live::start();
    // A change starts a snapshot, which waits on the silent remote (written
    // again until one reaches it: a write during a snapshot that just
    // failed waits for the next wake-up).
    proxy.hang();
    let mut n = 0;
    proxy.wait_held(1, &up, || {
        n += 1;
        let text = format!("written while the remote hangs ({n})");
        std::fs::write(s.path("data/late.txt"), text).unwrap();
    });
    let (code, took) = stop(&mut up);
    assert_within_budget(&up, took);
    assert_eq!(code, Some(3), "{}", up.log());
    assert!(up.has_line("final backup failed"), "{}", up.log());
}

#[test]
fn a_remote_that_stops_answering_for_the_final_snapshot_fails_it_in_time() {
    let Live {
        mut up,
        s: _s,
        proxy,
        _remote,
    } = Live::start();
    proxy.hang();
    let (code, took) = stop(&mut up);
    assert_within_budget(&up, took);
    assert_eq!(code, Some(3), "{}", up.log());
    assert!(
        proxy.held() >= 1,
        "the final snapshot never tried the remote"
    );
    // The remote's own error, not the backup being abandoned.
    assert!(
        up.has_line("final backup failed") && up.has_line("gave up on `http://127.0.0.1:"),
        "{}",
        up.log()
    );
}

#[test]
fn a_cancelled_snapshot_stops_between_files_and_the_next_one_works() {
    use stackctl::persist::deadline::{Limit, Stop};
    use stackctl::persist::snapshot::SnapshotError;
    use stackctl::persist::{PersistError, Persister, RestoreOptions};

    let d = crate::common_persist::Dirs::new();
    std::fs::create_dir_all(&d.data).unwrap();
    for i in 0..20 {
        std::fs::write(d.data.join(format!("f{i}.txt")), format!("{i}")).unwrap();
    }
    let p = Persister::with_config(d.config("work"), crate::common_persist::quick()).unwrap();
    p.restore(&RestoreOptions::default()).unwrap();
    let limit = Limit::new();
    limit.cancel();
    let e = limit.enter(|| p.snapshot_and_push()).unwrap_err();
    assert!(
        matches!(
            e,
            PersistError::Snapshot(SnapshotError::Stopped(Stop::Cancelled))
        ),
        "{e:?}"
    );
    assert!(p.list_snapshots(10).unwrap().is_empty());
    let report = p.snapshot_and_push().unwrap();
    assert_eq!(report.files, 20);
    assert!(report.pushed.is_some());
}
