//! The SQLite copy: a consistent copy of a live database through SQLite's
//! online backup API, never a raw read of a file a writer may be changing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::SnapshotError;

/// Remove a database file and any side files SQLite left beside it.
pub(super) fn remove_db_files(db: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// Copy the database at `src` to `dst` with SQLite's online backup API, in
/// one step (a consistent read transaction), retrying while a writer holds a
/// lock, up to `busy` in total.
pub fn sqlite_copy(src: &Path, dst: &Path, busy: Duration) -> Result<(), SnapshotError> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};
    let err = |e: rusqlite::Error| SnapshotError::Sqlite {
        path: src.to_path_buf(),
        reason: e.to_string(),
    };
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    source.busy_timeout(busy).map_err(err)?;
    let mut dest = Connection::open(dst).map_err(err)?;
    let deadline = Instant::now() + busy;
    {
        let backup = Backup::new(&source, &mut dest).map_err(err)?;
        loop {
            match backup.step(-1).map_err(err)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if Instant::now() >= deadline {
                        return Err(SnapshotError::Sqlite {
                            path: src.to_path_buf(),
                            reason: format!("still locked by a writer after {}s", busy.as_secs()),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // rusqlite's StepResult is non-exhaustive.
                _ => {}
            }
        }
    }
    // A restored copy must open on its own: no WAL file travels with it.
    dest.pragma_update(None, "journal_mode", "DELETE")
        .map_err(err)?;
    dest.close().map_err(|(_, e)| err(e))?;
    normalise_header(dst).map_err(|e| SnapshotError::Read {
        path: dst.to_path_buf(),
        source: e,
    })
}

/// Offsets of the header's "file change counter" and "version-valid-for"
/// fields (big-endian u32 each).
const CHANGE_COUNTER_AT: u64 = 24;
const VERSION_VALID_FOR_AT: u64 = 92;

/// Set the change counter and version-valid-for of a copy to 1. They count
/// writes to the *file*, so two copies of the same content would otherwise
/// differ (the backup's own write transaction bumps them) and every snapshot
/// after a restore would commit an unchanged database. Setting both to the
/// same value keeps the header's page count valid; the copy is a new file
/// (restore renames it into place), so no reader has the old counter cached.
fn normalise_header(db: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(db)?;
    f.write_all_at(&1u32.to_be_bytes(), CHANGE_COUNTER_AT)?;
    f.write_all_at(&1u32.to_be_bytes(), VERSION_VALID_FOR_AT)?;
    f.sync_all()
}
