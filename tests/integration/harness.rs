//! The test harness: a temp dir with a `stack.yaml`, the real `stackctl`
//! binary run against it, and polling with deadlines.
//!
//! Every process a test starts is cleaned up on drop: `stackctl up` gets
//! SIGTERM (then SIGKILL), and any process still carrying this test's
//! marker variable in its environment is killed, so a failing test never
//! leaves services behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stackctl"))
}

/// The name of the environment variable that marks a test's processes.
pub const MARKER: &str = "STACKCTL_TEST_MARKER";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A port that was free a moment ago (bind :0, read, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Poll `f` until it returns `Some`, or panic with `what` past `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stack in a fresh temp dir.
pub struct Stack {
    /// The temp dir (deleted on drop).
    pub dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
    removed: Vec<String>,
    marker: String,
}

impl Stack {
    /// Write `yaml` as `stack.yaml` in a new temp dir.
    pub fn new(yaml: &str) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("stackctl-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("stack.yaml"), yaml).expect("write stack.yaml");
        let marker = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Stack {
            dir,
            envs: Vec::new(),
            removed: Vec::new(),
            marker,
        }
    }

    /// Write a file relative to the stack's directory.
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write file");
        self
    }

    /// A path relative to the stack's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The manifest path.
    pub fn file(&self) -> PathBuf {
        self.path("stack.yaml")
    }

    /// Set a variable in stackctl's environment.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Remove a variable from stackctl's environment.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.removed.push(k.into());
        self
    }

    /// The marker value every process of this stack carries.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("-f").arg(self.file()).args(args);
        c.current_dir(self.dir.path());
        c.env(MARKER, &self.marker);
        c.env("HOME", self.dir.path());
        c.env_remove("STACKCTL_FILE");
        c.env_remove("STACKCTL_ADMIN_PASSWORD");
        for k in &self.removed {
            c.env_remove(k);
        }
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Run a command to completion (60 s at most).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    /// Run a command with `stdin` text to completion (60 s at most).
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut c = self.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn stackctl");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = poll(Duration::from_secs(60), "the command to exit", || {
            child.try_wait().ok().flatten()
        });
        Output {
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
        }
    }

    /// Start `stackctl up` (or other long-running args) in the background.
    pub fn up(&self) -> Running {
        self.spawn(&["up"], None)
    }

    /// Start stackctl with `args`, optionally through a wrapper (e.g. `unshare`).
    pub fn spawn(&self, args: &[&str], wrapper: Option<&[&str]>) -> Running {
        let inner = self.command(args);
        let mut c = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..])
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (k, v) in inner.get_envs() {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                c.current_dir(self.dir.path());
                c
            }
            None => inner,
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().expect("spawn stackctl up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        for (stream, name) in [
            (
                Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
                "out",
            ),
            (
                Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
                "err",
            ),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(Line {
                        stream: name,
                        at: started.elapsed(),
                        text: line,
                    });
                }
            });
        }
        Running {
            child,
            lines,
            marker: self.marker.clone(),
            dir: self.dir.path().to_path_buf(),
            status: None,
        }
    }
}

/// A finished command.
#[must_use = "a command's output checks nothing until `code`, `stderr_has` or `stdout_has` is called"]
pub struct Output {
    /// The arguments after `-f FILE`.
    pub args: Vec<String>,
    /// How it ended.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Output {
    /// Assert the exit code, printing everything when it differs.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        if self.status.code() != Some(want) {
            panic!("expected exit {want}, got {:?}\n{self}", self.status);
        }
        self
    }

    /// Assert stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        if !self.stderr.contains(text) {
            panic!("stderr lacks {text:?}\n{self}");
        }
        self
    }

    /// Assert stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        if !self.stdout.contains(text) {
            panic!("stdout lacks {text:?}\n{self}");
        }
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stackctl {:?}: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
}

/// One line printed by a running stackctl.
#[derive(Debug, Clone)]
pub struct Line {
    /// "out" or "err".
    pub stream: &'static str,
    /// When it was read, since the start.
    pub at: Duration,
    /// The text.
    pub text: String,
}

/// A running `stackctl up`.
#[must_use = "a `Running` dropped at once stops the process it started"]
pub struct Running {
    /// The stackctl process.
    pub child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    marker: String,
    dir: PathBuf,
    status: Option<ExitStatus>,
}

impl Running {
    /// stackctl's PID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }

    /// Everything printed so far, one line each.
    pub fn log(&self) -> String {
        self.lines()
            .iter()
            .map(|l| format!("[{:>8.3}s {}] {}", l.at.as_secs_f64(), l.stream, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Wait for a line containing `text`; returns it. Panics with the log.
    #[track_caller]
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Line {
        self.wait_for_nth(text, 1, timeout)
    }

    /// Wait until `n` lines contain `text`; returns the n-th.
    #[track_caller]
    pub fn wait_for_nth(&mut self, text: &str, n: usize, timeout: Duration) -> Line {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Line> = self
                .lines()
                .into_iter()
                .filter(|l| l.text.contains(text))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for line #{n} containing {text:?}"
                ));
            }
            if self.status.is_none() {
                if let Ok(Some(_)) = self.child.try_wait() {
                    // Collect the last lines, then look once more.
                    self.wait_exit(Duration::from_secs(1));
                    continue;
                }
            } else {
                // Exited and the output is drained: the line will never come.
                self.fail(&format!(
                    "stackctl exited before printing line #{n} containing {text:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether some line contains `text`.
    pub fn has_line(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.text.contains(text))
    }

    /// Send a signal to stackctl.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for stackctl to exit.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                // Let the reader threads collect the last lines: each drops
                // its clone of `lines` at EOF.
                let until = Instant::now() + Duration::from_secs(2);
                while Arc::strong_count(&self.lines) > 1 && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return st;
            }
            if Instant::now() > deadline {
                self.fail(&format!("stackctl did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panic with a full report: the message, the dir listing and the log.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        let listing = Command::new("ls")
            .args(["-laR"])
            .arg(&self.dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "{msg}\n--- dir {}:\n{listing}\n--- status: {:?}\n--- log:\n{}",
            self.dir.display(),
            self.status,
            self.log()
        );
    }

    /// PIDs of live processes that carry this stack's marker (services and
    /// their children), excluding stackctl itself.
    pub fn marked_pids(&self) -> Vec<i32> {
        marked_pids(&self.marker)
            .into_iter()
            .filter(|p| *p != self.pid())
            .collect()
    }
}

/// PIDs of processes whose environment has `MARKER=marker`, skipping zombies.
pub fn marked_pids(marker: &str) -> Vec<i32> {
    let needle = format!("{MARKER}={marker}");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        if proc_state(pid) == Some('Z') {
            continue;
        }
        out.push(pid);
    }
    out
}

/// The state letter of a process (`R`, `S`, `Z`…), if it exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// The environment of a process as `K=V` strings.
pub fn proc_environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe {
                libc::kill(-self.pid(), libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in marked_pids(&self.marker) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A minimal HTTP/1.1 GET: `(status, headers, body)`. `None` if no answer.
pub fn http_get(url: &str) -> Option<(u16, String, String)> {
    http_request("GET", url, &[], "")
}

/// A minimal HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// Whether `path` exists (for readable test code).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Tests skipped in this run, `(test, why)`, for the summary at exit.
static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// A test that cannot run here (a missing tool, no namespaces) says so, never
/// silently: a silent skip is a false pass.
///
/// Under `CI=true` (what `.ci/run` sets, which installs every tool) a skip is
/// a failure: this panics. Elsewhere the notice goes straight to the
/// terminal (libtest captures only the `print!` macros), and one summary of
/// every skip is printed when the test binary exits, after libtest's own
/// result lines. The caller returns right after. The test is named by its
/// thread, which libtest names after the test.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if is_ci() {
        panic!("{test} cannot run under CI=true: {why}");
    }
    loud(&format!("SKIPPED {test}: {why}\n"));
    let mut list = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if list.is_empty() {
        // SAFETY: registers a plain `extern "C" fn()` that only reads a
        // static; it runs once, at exit, on the main thread.
        unsafe { libc::atexit(print_skipped) };
    }
    list.push((test.to_string(), why.to_string()));
}

/// Is this run CI's (`CI=true`, or any non-empty value but `false`/`0`)?
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Write to stderr past libtest's capture.
pub fn loud(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

extern "C" fn print_skipped() {
    let list = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = format!(
        "\nnotice: {} test(s) skipped; under CI=true each would fail:\n",
        list.len()
    );
    for (test, why) in list.iter() {
        text.push_str(&format!("  SKIPPED {test}: {why}\n"));
    }
    loud(&text);
}
