//! Byte progress of large files through the real binary: `stackctl backup`
//! and `restore` print plain lines while one large file moves through a
//! `dir:` store (stdout is a pipe here, not a terminal), and `stackctl up`
//! logs them during its restore at start. The interval comes down to 1 ms
//! through `STACKCTL_PROGRESS_INTERVAL`, so a transfer of a fraction of a
//! second shows many lines.

use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, Stack};

/// Large enough that moving it takes many 1 ms ticks even on a fast disk.
const SIZE_MIB: u64 = 96;

fn stack(port: u16) -> Stack {
    let s = Stack::new(&format!(
        r#"
name: progress
gateway:
  listen: 127.0.0.1:{port}
  admin: {{ password: "correct-horse-battery" }}
persist:
  remote: ./remote.git
  workdir: ./work
  paths: [./data]
  large_files: {{ threshold: 1MiB, store: "dir:./blobs" }}
"#
    ))
    .env("STACKCTL_PROGRESS_INTERVAL", "1ms");
    crate::common_persist::init_bare(&s.path("remote.git"));
    std::fs::create_dir_all(s.path("data")).unwrap();
    s
}

/// `SIZE_MIB` MiB whose every MiB differs (no run of identical blocks).
pub(crate) fn big_file() -> Vec<u8> {
    let mut v = Vec::with_capacity((SIZE_MIB << 20) as usize);
    for i in 0..(SIZE_MIB << 20) / 8 {
        v.extend_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    v
}

/// The inverse of the plain lines' sizes (`12 B`, `3 KiB`, `412 MiB`,
/// `1.0 GiB`), in bytes.
fn parse_size(text: &str) -> u64 {
    let (n, unit) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("no unit in {text:?}"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unknown unit {other:?} in {text:?}"),
    };
    (n.parse::<f64>()
        .unwrap_or_else(|_| panic!("bad number in {text:?}"))
        * scale) as u64
}

/// (done, total) of every `LABEL: DONE of TOTAL (P%) PATH` line in
/// `output` that names `file`.
pub(crate) fn byte_lines(output: &str, label: &str, file: &str) -> Vec<(u64, u64)> {
    let prefix = format!("{label}: ");
    output
        .lines()
        .filter_map(|l| {
            // The log format puts a level before the message.
            let at = l.find(&prefix)?;
            let rest = &l[at + prefix.len()..];
            if !rest.contains(file) {
                return None;
            }
            let (done, rest) = rest.split_once(" of ")?;
            let total = rest.split(" (").next()?;
            Some((parse_size(done), parse_size(total)))
        })
        .collect()
}

/// Several lines strictly inside the transfer, counts never going back,
/// and a last line at the whole size.
#[track_caller]
pub(crate) fn assert_moving(lines: &[(u64, u64)], all: &str) {
    let total = SIZE_MIB << 20;
    assert!(
        lines.iter().all(|&(_, t)| t == total),
        "every line shows the total of {SIZE_MIB} MiB: {lines:?}\n{all}"
    );
    let inside: Vec<u64> = lines
        .iter()
        .map(|&(d, _)| d)
        .filter(|&d| d > 0 && d < total)
        .collect();
    let distinct: std::collections::BTreeSet<u64> = inside.iter().copied().collect();
    assert!(
        distinct.len() >= 2,
        "at least two intermediate byte counts: {lines:?}\n{all}"
    );
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "byte counts never go back: {lines:?}\n{all}"
    );
    assert_eq!(
        lines.last().map(|l| l.0),
        Some(total),
        "the last line shows the end: {lines:?}\n{all}"
    );
}

#[test]
fn backup_and_restore_print_byte_progress_within_a_large_file() {
    let s = stack(free_port());
    s.run(&["restore"]).code(0).stdout_has("no snapshot yet");
    let content = big_file();
    std::fs::write(s.path("data/big.bin"), &content).unwrap();

    let out = s.run(&["backup"]);
    out.code(0).stdout_has("pushed");
    let lines = byte_lines(&out.stderr, "backup", "data/big.bin");
    assert_moving(&lines, &out.to_string());

    // A wiped disk: data and workdir gone, the blob store and remote kept.
    std::fs::remove_dir_all(s.path("data")).unwrap();
    std::fs::remove_dir_all(s.path("work")).unwrap();
    let out = s.run(&["restore"]);
    out.code(0).stdout_has("restored snapshot");
    let lines = byte_lines(&out.stderr, "restore", "data/big.bin");
    assert_moving(&lines, &out.to_string());
    assert!(
        std::fs::read(s.path("data/big.bin")).unwrap() == content,
        "the restored file has the content backed up"
    );
}

#[test]
fn up_logs_byte_progress_of_its_restore_at_start() {
    let s = stack(free_port());
    s.run(&["restore"]).code(0);
    std::fs::write(s.path("data/big.bin"), big_file()).unwrap();
    s.run(&["backup"]).code(0).stdout_has("pushed");
    // The data is lost, the workdir kept: a new workdir would be a new
    // writer, waiting for the lease the `backup` above still holds.
    std::fs::remove_dir_all(s.path("data")).unwrap();

    let mut up = s.up();
    up.wait_for("restore finished", Duration::from_secs(60));
    let log = up.log();
    assert_moving(&byte_lines(&log, "restore", "data/big.bin"), &log);
    stop_cleanly(&mut up);
}

#[test]
fn the_restoring_page_shows_the_bytes_of_a_large_file_on_its_way() {
    let port = free_port();
    let s = stack(port);
    s.run(&["restore"]).code(0);
    let content = big_file();
    std::fs::write(s.path("data/big.bin"), &content).unwrap();
    s.run(&["backup"]).code(0).stdout_has("pushed");
    std::fs::remove_dir_all(s.path("data")).unwrap();

    // The stored blob becomes a named pipe: the restore reads what this
    // test writes into it, when it writes it, so the page is looked at
    // while the file is provably half-way.
    let blob = walk_files(&s.path("blobs"))
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == content.len() as u64))
        .expect("the big file's blob in the dir: store");
    std::fs::remove_file(&blob).unwrap();
    let ok = Command::new("mkfifo")
        .arg(&blob)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");

    let mut up = s.up();
    let mut pipe = open_pipe_for_writing(&blob);
    let half = content.len() / 2;
    std::io::Write::write_all(&mut pipe, &content[..half]).unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let line = crate::harness::poll(
        Duration::from_secs(30),
        "byte progress on the 503 page",
        || {
            let (status, _, body) = crate::harness::http_get(&url)?;
            (status == 503 && body.contains("large files: ") && !body.contains("large files: 0 B"))
                .then_some(body)
        },
    );
    assert!(line.contains(&format!("of {SIZE_MIB} MiB")), "{line}");
    assert!(line.contains("restoring (0 of 1 files)"), "{line}");
    assert!(
        !line.contains("big.bin"),
        "no paths on the public page: {line}"
    );
    std::io::Write::write_all(&mut pipe, &content[half..]).unwrap();
    drop(pipe);

    up.wait_for("restore finished", Duration::from_secs(60));
    assert!(
        std::fs::read(s.path("data/big.bin")).unwrap() == content,
        "the restored file has the content backed up"
    );
    stop_cleanly(&mut up);
}

/// SIGTERM, and a clean exit.
fn stop_cleanly(up: &mut crate::harness::Running) {
    up.signal(libc::SIGTERM);
    assert_eq!(
        up.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        up.log()
    );
}

/// Open a named pipe for writing once its reader has opened it: polled
/// with a deadline (a blocking open would hang the test if the reader
/// never came), then switched back to blocking writes.
fn open_pipe_for_writing(path: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let f = crate::harness::poll(
        Duration::from_secs(60),
        "the restore to open the blob",
        || {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok()
        },
    );
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        assert!(flags >= 0);
        assert_eq!(
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK),
            0
        );
    }
    f
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
