//! Service output: every line of every service on stackctl's stdout (what
//! `docker logs` shows), prefixed with the service name or as JSON, plus an
//! optional per-service file with size rotation.
//!
//! Pipes are read by tokio tasks (one per stream per run); lines go through a
//! bounded channel to a single writer thread, which owns all blocking writes
//! (stdout, files) so a slow terminal or disk never stalls the runtime. When
//! stdout is slower than the services the channel fills, readers wait, the
//! pipes fill and the services block on write: the usual back-pressure, and
//! no unbounded buffering. Lines longer than [`MAX_LINE`] are split.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cli::LogFormat;
use crate::manifest::LogFile;

/// Longest line kept whole; longer output is emitted in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Lines queued between readers and the writer thread.
const QUEUE: usize = 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The service's stdout.
    Stdout,
    /// The service's stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits a byte stream into lines without unbounded buffering.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; returns the complete lines (without `\n`), long ones cut
    /// into [`MAX_LINE`] pieces.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(&first) = data.first() {
            // A full buffer is emitted only once more data shows whether the
            // line ends right there, so a line of exactly MAX_LINE bytes is
            // one piece, not a piece plus an empty line.
            if self.buf.len() >= MAX_LINE {
                out.push(std::mem::take(&mut self.buf));
                if first == b'\n' {
                    data = &data[1..];
                    continue;
                }
            }
            let room = MAX_LINE - self.buf.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    self.buf.extend_from_slice(&window[..n]);
                    out.push(std::mem::take(&mut self.buf));
                    data = &data[n + 1..];
                }
                None => {
                    self.buf.extend_from_slice(window);
                    data = &data[window.len()..];
                }
            }
        }
        out
    }

    /// The final partial line at end of stream, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.buf))
        }
    }
}

/// Watches a service's output for a text (the `log:` probe).
#[derive(Debug, Clone)]
pub struct LogWatch {
    /// The text a line must contain.
    pub needle: String,
    /// Set to `true` once a line contained it.
    pub seen: watch::Sender<bool>,
}

struct Msg {
    service: usize,
    stream: Stream,
    at: SystemTime,
    line: Vec<u8>,
}

/// The log fan-in: readers send lines here, one thread writes them.
#[derive(Debug)]
pub struct LogHub {
    tx: mpsc::Sender<Msg>,
    done: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msg")
            .field("service", &self.service)
            .finish()
    }
}

impl LogHub {
    /// Start the writer thread. `names[i]` and `files[i]` belong to service
    /// `i`; text prefixes are padded to `width`.
    pub fn start(
        format: LogFormat,
        names: Vec<String>,
        width: usize,
        files: Vec<Option<LogFile>>,
    ) -> io::Result<LogHub> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let writer = Writer {
            format,
            names,
            width,
            files: files
                .into_iter()
                .map(|f| f.map(RotatingFile::new))
                .collect(),
        };
        std::thread::Builder::new()
            .name("stackctl-logs".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })?;
        Ok(LogHub { tx, done })
    }

    /// The task that reads `fd` (a pipe from service `service`) until end
    /// of stream; the caller spawns it (and catches its panic).
    pub fn reader(
        &self,
        service: usize,
        stream: Stream,
        fd: OwnedFd,
        watches: Vec<LogWatch>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(service, error = %e, "cannot read service output");
                    return;
                }
            };
            let mut split = LineSplitter::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let lines = match pipe.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => split.push(&buf[..n]),
                    Err(e) => {
                        tracing::warn!(service, error = %e, "reading service output failed");
                        break;
                    }
                };
                for line in lines {
                    if !send(&tx, &watches, service, stream, line).await {
                        return;
                    }
                }
            }
            if let Some(line) = split.finish() {
                send(&tx, &watches, service, stream, line).await;
            }
        }
    }

    /// Stop accepting lines and wait (at most `grace`) until every line
    /// already read is written. Readers still attached keep the writer
    /// alive; `grace` bounds the wait for them.
    pub async fn close(self, grace: Duration) {
        drop(self.tx);
        let _ = tokio::time::timeout(grace, self.done).await;
    }
}

async fn send(
    tx: &mpsc::Sender<Msg>,
    watches: &[LogWatch],
    service: usize,
    stream: Stream,
    line: Vec<u8>,
) -> bool {
    for w in watches {
        if !*w.seen.borrow() && contains(&line, w.needle.as_bytes()) {
            w.seen.send_replace(true);
        }
    }
    let msg = Msg {
        service,
        stream,
        at: SystemTime::now(),
        line,
    };
    tx.send(msg).await.is_ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

struct Writer {
    format: LogFormat,
    names: Vec<String>,
    width: usize,
    files: Vec<Option<RotatingFile>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut out = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.blocking_recv() {
            // Batch whatever is queued into one write to stdout.
            out.clear();
            let mut next = Some(first);
            while let Some(msg) = next {
                self.render(&mut out, &msg);
                self.append_to_file(&msg);
                if out.len() >= 64 * 1024 {
                    break;
                }
                next = rx.try_recv().ok();
            }
            // stdout may be closed (no one reads `docker logs`): keep
            // draining so services never block, just drop the text.
            let mut stdout = io::stdout().lock();
            let _ = stdout.write_all(&out);
            let _ = stdout.flush();
        }
    }

    fn render(&self, out: &mut Vec<u8>, msg: &Msg) {
        let name = self
            .names
            .get(msg.service)
            .map(String::as_str)
            .unwrap_or("?");
        match self.format {
            LogFormat::Text => {
                out.extend_from_slice(text_prefix(name, self.width).as_bytes());
                out.extend_from_slice(&msg.line);
                out.push(b'\n');
            }
            LogFormat::Json => {
                out.extend_from_slice(json_line(msg.at, name, msg.stream, &msg.line).as_bytes());
                out.push(b'\n');
            }
        }
    }

    fn append_to_file(&mut self, msg: &Msg) {
        let Some(slot) = self.files.get_mut(msg.service) else {
            return;
        };
        let Some(file) = slot else { return };
        if let Err(e) = file.write_line(&msg.line) {
            // Warn once and stop writing this file rather than once per line.
            tracing::warn!(file = %file.path.display(), error = %e, "cannot write service log file; file logging for this service is off");
            *slot = None;
        }
    }
}

/// `name  | ` padded so the bars line up.
pub fn text_prefix(name: &str, width: usize) -> String {
    format!("{name:<width$} | ")
}

/// One JSON log object (without the newline).
pub fn json_line(at: SystemTime, service: &str, stream: Stream, line: &[u8]) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: String,
        service: &'a str,
        stream: &'a str,
        line: &'a str,
    }
    let text = String::from_utf8_lossy(line);
    let obj = Line {
        ts: rfc3339(at),
        service,
        stream: stream.as_str(),
        line: &text,
    };
    // Serialising plain strings cannot fail; fall back to an empty object
    // rather than panic should it ever.
    serde_json::to_string(&obj).unwrap_or_else(|_| "{}".to_string())
}

/// `2026-01-02T03:04:05.678Z` (UTC, milliseconds).
pub fn rfc3339(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A log file that rotates by size: `file` → `file.1` → … → `file.N`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    /// Opened lazily on the first line.
    pub fn new(cfg: LogFile) -> Self {
        RotatingFile {
            path: cfg.file,
            max_size: cfg.max_size,
            keep: cfg.keep,
            file: None,
            size: 0,
        }
    }

    /// Append `line` and a newline, rotating first if it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        let mut rec = Vec::with_capacity(line.len() + 1);
        rec.extend_from_slice(line);
        rec.push(b'\n');
        f.write_all(&rec)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            for i in (1..self.keep).rev() {
                fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1))
                    .or_else(ignore_missing)?;
            }
            fs::rename(&self.path, numbered(&self.path, 1)).or_else(ignore_missing)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }
}

fn numbered(p: &Path, i: u32) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_split_on_newlines_across_reads() {
        let mut s = LineSplitter::default();
        assert_eq!(lines(s.push(b"hel")), Vec::<String>::new());
        assert_eq!(lines(s.push(b"lo\nwor")), ["hello"]);
        assert_eq!(lines(s.push(b"ld\n\nlast")), ["world", ""]);
        assert_eq!(s.finish(), Some(b"last".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn very_long_lines_are_cut_not_buffered() {
        let mut s = LineSplitter::default();
        let mut data = vec![b'x'; MAX_LINE * 2 + 10];
        data.push(b'\n');
        let out = s.push(&data);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 10]
        );
        // Fed byte by byte the result is the same.
        let mut s = LineSplitter::default();
        let mut out = vec![];
        for b in &data {
            out.extend(s.push(std::slice::from_ref(b)));
        }
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 10]
        );
    }

    #[test]
    fn a_line_of_exactly_max_is_one_piece() {
        let mut s = LineSplitter::default();
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        data.extend_from_slice(b"next\n");
        let out = s.push(&data);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_LINE, 4]);
        // Without the newline yet, the full piece waits (bounded) ...
        let mut s = LineSplitter::default();
        assert!(s.push(&vec![b'y'; MAX_LINE]).is_empty());
        // ... and goes out at end of stream.
        assert_eq!(s.finish().map(|l| l.len()), Some(MAX_LINE));
    }

    #[test]
    fn text_prefixes_line_up() {
        assert_eq!(text_prefix("db", 5), "db    | ");
        assert_eq!(text_prefix("worker", 5), "worker | ");
    }

    #[test]
    fn json_lines_carry_time_service_stream_and_text() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let got = json_line(at, "web", Stream::Stderr, b"say \"hi\"\xff");
        assert_eq!(
            got,
            r#"{"ts":"2023-11-14T22:13:20.123Z","service":"web","stream":"stderr","line":"say \"hi\"�"}"#
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let table = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in table {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn files_rotate_by_size_keeping_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/web.log");
        let mut f = RotatingFile::new(LogFile {
            file: path.clone(),
            max_size: 10,
            keep: 2,
        });
        for l in ["aaaa", "bbbb", "cccc", "dddd", "eeee"] {
            f.write_line(l.as_bytes()).unwrap();
        }
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "eeee\n");
        assert_eq!(read(numbered(&path, 1)), "cccc\ndddd\n");
        assert_eq!(read(numbered(&path, 2)), "aaaa\nbbbb\n");
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut f = RotatingFile::new(LogFile {
            file: path.clone(),
            max_size: 6,
            keep: 0,
        });
        f.write_line(b"12345").unwrap();
        f.write_line(b"67890").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "67890\n");
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn log_probe_needles_match_bytes() {
        assert!(contains(b"server listening on :80", b"listening"));
        assert!(!contains(b"starting", b"listening"));
        assert!(contains(b"", b""));
    }
}
