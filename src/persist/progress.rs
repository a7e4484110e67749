//! Byte progress of large-file transfers (uploads in a backup, downloads in
//! a restore), within a file and across all of them.
//!
//! The transfer itself only bumps a [`ByteCounter`] (one relaxed atomic add
//! per chunk, in [`super::blob`]); [`watch`] runs a reporter thread beside
//! it that reads a [`Reading`] every tick and hands it to a
//! [`ProgressSink`]: bars on a terminal (`stackctl backup` / `restore`),
//! or throttled plain lines ([`Lines`]) on stderr or in the log, which is
//! what a Hugging Face Space shows during a long restore at start.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::blob::ByteCounter;

/// How often plain progress lines are printed at most, unless
/// [`INTERVAL_ENV`] says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Overrides [`DEFAULT_INTERVAL`] (a duration such as `100ms`). Meant for
/// tests, which need several lines from a transfer of a second or two.
pub const INTERVAL_ENV: &str = "STACKCTL_PROGRESS_INTERVAL";

/// How often a reporter reads the counter when its sink does not say.
const TICK: Duration = Duration::from_millis(100);

/// The plain-line interval: [`INTERVAL_ENV`] when set and valid, else
/// [`DEFAULT_INTERVAL`].
pub fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| crate::manifest::units::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_INTERVAL)
}

/// One transfer of large files: what is planned, which file moves now, and
/// the counter its bytes are counted in.
pub struct Transfer {
    label: &'static str,
    counter: Arc<ByteCounter>,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: u64,
    count: usize,
    /// Bytes of the files already finished (or skipped).
    finished: u64,
    /// Files begun so far (the current one included).
    index: usize,
    current: Option<(PathBuf, u64)>,
}

impl Transfer {
    /// A transfer of `count` files, `total` bytes in all; `label` starts
    /// every line (`backup`, `restore`).
    pub fn new(label: &'static str, total: u64, count: usize) -> Self {
        Transfer {
            label,
            counter: Arc::new(ByteCounter::default()),
            started: Instant::now(),
            state: Mutex::new(State {
                total,
                count,
                ..State::default()
            }),
        }
    }

    /// The counter the transfer's reads and writes go to (see
    /// [`super::blob::counting`]).
    pub fn counter(&self) -> &Arc<ByteCounter> {
        &self.counter
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Display state only: a panic elsewhere leaves nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `path` (`size` bytes) starts moving.
    pub fn begin_file(&self, path: &Path, size: u64) {
        self.counter.reset();
        let mut s = self.state();
        s.index += 1;
        s.current = Some((path.to_path_buf(), size));
    }

    /// The current file is done (moved, or failed: either way it no
    /// longer moves).
    pub fn end_file(&self) {
        let mut s = self.state();
        if let Some((_, size)) = s.current.take() {
            s.finished += size;
        }
        self.counter.reset();
    }

    /// A planned file of `size` bytes needs no transfer (already there).
    pub fn skip_file(&self, size: u64) {
        let mut s = self.state();
        s.index += 1;
        s.finished += size;
    }

    /// Where the transfer stands now.
    pub fn read(&self) -> Reading {
        let s = self.state();
        let (file, file_size) = match &s.current {
            Some((p, size)) => (Some(p.clone()), *size),
            None => (None, 0),
        };
        // A retry re-reads from zero; a counter never shows more than the file.
        let file_done = self.counter.get().min(file_size);
        Reading {
            label: self.label,
            done: (s.finished + file_done).min(s.total.max(s.finished)),
            total: s.total,
            file,
            file_done,
            file_size,
            index: s.index,
            count: s.count,
            elapsed: self.started.elapsed(),
        }
    }
}

/// A transfer's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// `backup` or `restore`.
    pub label: &'static str,
    /// Bytes done across all files.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
    /// The file moving now.
    pub file: Option<PathBuf>,
    /// Its bytes done.
    pub file_done: u64,
    /// Its size.
    pub file_size: u64,
    /// Its number, from 1.
    pub index: usize,
    /// Files in all.
    pub count: usize,
    /// Since the transfer began.
    pub elapsed: Duration,
}

/// Where [`watch`] sends readings.
pub trait ProgressSink: Send + Sync {
    /// Called every [`ProgressSink::tick`] while a transfer runs.
    fn update(&self, r: &Reading);
    /// Called once when the transfer ends (successfully or not).
    fn finish(&self, r: &Reading);
    /// How often to be called.
    fn tick(&self) -> Duration {
        TICK
    }
}

/// Shows nothing.
pub struct Silent;

impl ProgressSink for Silent {
    fn update(&self, _: &Reading) {}
    fn finish(&self, _: &Reading) {}
}

/// Run `work` on this thread (so [`super::blob::counting`] applies to it)
/// while a reporter thread feeds `sink` readings of `transfer`.
pub fn watch<T>(transfer: &Transfer, sink: &dyn ProgressSink, work: impl FnOnce() -> T) -> T {
    let tick = sink.tick().max(Duration::from_millis(1));
    let (stop, stopped) = mpsc::channel::<()>();
    let out = std::thread::scope(|scope| {
        scope.spawn(move || {
            // Wakes every tick; ends at once when `stop` is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                sink.update(&transfer.read());
            }
        });
        let out = work();
        drop(stop);
        out
    });
    sink.finish(&transfer.read());
    out
}

/// `12 B`, `340 KiB`, `412 MiB`, `1.0 GiB`: binary units, whole numbers
/// below a GiB (a line every few seconds needs no more).
pub fn human_bytes(b: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match b {
        _ if b < KIB => format!("{b} B"),
        _ if b < MIB => format!("{} KiB", b / KIB),
        _ if b < GIB => format!("{} MiB", b / MIB),
        _ => format!("{:.1} GiB", b as f64 / GIB as f64),
    }
}

/// The plain line for `r`:
/// `restore: 412 MiB of 1.0 GiB (41%) /data/big.db (file 2 of 3)`.
pub fn plain_line(r: &Reading) -> String {
    let mut s = format!(
        "{}: {} of {}",
        r.label,
        human_bytes(r.done),
        human_bytes(r.total)
    );
    if r.total > 0 {
        // u128: no overflow for any u64 byte count.
        let pct = u128::from(r.done) * 100 / u128::from(r.total);
        let _ = write!(s, " ({pct}%)");
    }
    if let Some(f) = &r.file {
        let _ = write!(s, " {}", f.display());
        if r.count > 1 {
            let _ = write!(s, " (file {} of {})", r.index, r.count);
        }
    }
    s
}

/// The short line for a public page: bytes and percentage, no paths
/// (`large files: 412 MiB of 1.0 GiB (41%)`).
pub fn public_line(r: &Reading) -> String {
    let mut s = format!(
        "large files: {} of {}",
        human_bytes(r.done),
        human_bytes(r.total)
    );
    if r.total > 0 {
        let pct = u128::from(r.done) * 100 / u128::from(r.total);
        let _ = write!(s, " ({pct}%)");
    }
    s
}

/// When a plain line is due: at most one per `every`, none in the first
/// `every` (a short transfer prints nothing), and none that would repeat
/// the last line's byte count (so the counts printed only ever grow).
/// Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    next: Duration,
    last_done: Option<u64>,
}

impl Throttle {
    /// A throttle printing at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            next: every,
            last_done: None,
        }
    }

    /// Is a line showing `done` bytes due at `at` (time since the
    /// transfer began)? Yes records it as printed.
    pub fn due(&mut self, at: Duration, done: u64) -> bool {
        if at < self.next || self.last_done.is_some_and(|d| d >= done) {
            return false;
        }
        // From now, not from the last deadline: no burst after a stall.
        self.next = at + self.every;
        self.last_done = Some(done);
        true
    }

    /// Does the end deserve a line? Only when earlier lines were printed
    /// (a reader of the log saw it going) and the last one was short of it.
    pub fn due_at_end(&mut self, done: u64) -> bool {
        match self.last_done {
            Some(d) if d < done => {
                self.last_done = Some(done);
                true
            }
            _ => false,
        }
    }
}

/// Throttled plain lines: on stderr (`stackctl backup` / `restore` when
/// stdout is not a terminal) or through `tracing` (`stackctl up`, so the
/// Space's log shows a long restore moving).
pub struct Lines {
    every: Duration,
    out: Output,
    /// The throttle of the transfer under way (a new one per transfer).
    throttle: Mutex<Option<Throttle>>,
}

enum Output {
    Stderr,
    Log,
}

impl Lines {
    /// Lines on stderr, at most one per `every`.
    pub fn stderr(every: Duration) -> Self {
        Self::with(every, Output::Stderr)
    }

    /// Lines through `tracing` at info level, at most one per `every`.
    pub fn log(every: Duration) -> Self {
        Self::with(every, Output::Log)
    }

    fn with(every: Duration, out: Output) -> Self {
        Lines {
            every,
            out,
            throttle: Mutex::new(None),
        }
    }

    fn emit(&self, r: &Reading) {
        let line = plain_line(r);
        match self.out {
            Output::Stderr => eprintln!("{line}"),
            Output::Log => {
                let secs = r.elapsed.as_secs_f64();
                let mib_per_s = if secs > 0.0 {
                    (r.done as f64 / f64::from(1 << 20) / secs * 10.0).round() / 10.0
                } else {
                    0.0
                };
                tracing::info!(bytes = r.done, total = r.total, mib_per_s, "{line}");
            }
        }
    }
}

impl ProgressSink for Lines {
    fn update(&self, r: &Reading) {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        if t.get_or_insert_with(|| Throttle::new(self.every))
            .due(r.elapsed, r.done)
        {
            self.emit(r);
        }
    }

    fn finish(&self, r: &Reading) {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        if t.take().is_some_and(|mut t| t.due_at_end(r.done)) {
            self.emit(r);
        }
    }

    fn tick(&self) -> Duration {
        self.every.min(TICK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(done: u64, total: u64) -> Reading {
        Reading {
            label: "restore",
            done,
            total,
            file: Some(PathBuf::from("data/big.db")),
            file_done: done,
            file_size: total,
            index: 1,
            count: 1,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(412 << 20), "412 MiB");
        assert_eq!(human_bytes((1 << 30) - 1), "1023 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(5 * (1 << 30) / 2), "2.5 GiB");
    }

    #[test]
    fn the_public_line_shows_bytes_and_percent_but_no_path() {
        assert_eq!(
            public_line(&reading(412 << 20, 1 << 30)),
            "large files: 412 MiB of 1.0 GiB (40%)"
        );
        assert_eq!(public_line(&reading(0, 0)), "large files: 0 B of 0 B");
    }

    #[test]
    fn a_plain_line_shows_total_bytes_percent_and_the_file() {
        assert_eq!(
            plain_line(&reading(412 << 20, 1 << 30)),
            "restore: 412 MiB of 1.0 GiB (40%) data/big.db"
        );
        let mut r = reading(u64::MAX / 2, u64::MAX);
        r.label = "backup";
        r.index = 2;
        r.count = 3;
        assert!(plain_line(&r).ends_with("(49%) data/big.db (file 2 of 3)"));
        // Nothing to move: no percentage (no division by zero).
        r.total = 0;
        r.done = 0;
        r.file = None;
        assert_eq!(plain_line(&r), "backup: 0 B of 0 B");
    }

    #[test]
    fn the_throttle_waits_an_interval_and_never_repeats_a_count() {
        let s = Duration::from_secs;
        let mut t = Throttle::new(s(5));
        assert!(!t.due(s(1), 10), "nothing in the first interval");
        assert!(t.due(s(5), 20));
        assert!(!t.due(s(6), 30), "at most one line per interval");
        assert!(!t.due(s(11), 20), "the same count is not printed again");
        assert!(t.due(s(12), 40));
        // Counted from the last line, not from the missed deadlines.
        assert!(!t.due(s(16), 50));
        assert!(t.due(s(17), 50));
        assert!(t.due_at_end(60), "the end follows earlier lines");
        assert!(!t.due_at_end(60));
        let mut quiet = Throttle::new(s(5));
        assert!(!quiet.due(s(1), 10));
        assert!(!quiet.due_at_end(100), "a short transfer prints nothing");
    }

    #[test]
    fn a_transfer_reads_finished_files_plus_the_counter() {
        let t = Transfer::new("restore", 300, 3);
        t.skip_file(100);
        t.begin_file(Path::new("/d/b"), 150);
        t.counter().add(40);
        let r = t.read();
        assert_eq!((r.done, r.file_done, r.index), (140, 40, 2));
        assert_eq!(r.file.as_deref(), Some(Path::new("/d/b")));
        // Never more than the file, whatever the counter says.
        t.counter().add(1000);
        assert_eq!(t.read().done, 250);
        t.end_file();
        let r = t.read();
        assert_eq!((r.done, r.file_done, r.file), (250, 0, None));
    }

    /// Records what a sink saw.
    #[derive(Default)]
    struct Record(Mutex<(Vec<u64>, Option<u64>)>);

    impl ProgressSink for Record {
        fn update(&self, r: &Reading) {
            self.0.lock().unwrap().0.push(r.done);
        }
        fn finish(&self, r: &Reading) {
            self.0.lock().unwrap().1 = Some(r.done);
        }
        fn tick(&self) -> Duration {
            Duration::from_millis(1)
        }
    }

    #[test]
    fn watch_reports_while_the_work_runs_and_once_at_the_end() {
        let t = Transfer::new("backup", 100, 1);
        let sink = Record::default();
        let out = watch(&t, &sink, || {
            t.begin_file(Path::new("f"), 100);
            t.counter().add(30);
            // Work until the reporter has seen the 30 bytes (with a deadline).
            let deadline = Instant::now() + Duration::from_secs(10);
            while !sink.0.lock().unwrap().0.contains(&30) {
                assert!(Instant::now() < deadline, "the reporter never ran");
                std::thread::yield_now();
            }
            t.counter().add(70);
            t.end_file();
            "done"
        });
        assert_eq!(out, "done");
        let (seen, end) = sink.0.lock().unwrap().clone();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(end, Some(100));
    }
}
