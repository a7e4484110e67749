//! The snapshot commit: made only when the tree changed, with stackctl's
//! identity and a message that records the files and bytes.

use git2::{Oid, Repository};

use super::Built;

/// Commit `tree` on `refname` unless it equals the tip's tree. Returns the
/// new commit, or `None` when nothing changed.
pub fn commit_if_changed(
    repo: &Repository,
    refname: &str,
    tree: Oid,
    message: &str,
) -> Result<Option<Oid>, git2::Error> {
    let parent = match repo.find_reference(refname) {
        Ok(r) => Some(r.peel_to_commit()?),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree) {
        return Ok(None);
    }
    let tree = repo.find_tree(tree)?;
    let sig = signature()?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo.commit(None, &sig, &sig, message, &tree, &parents)?;
    // Compare-and-swap on the ref: a concurrent writer in this workdir fails here.
    match &parent {
        Some(p) => repo.reference_matching(refname, oid, true, p.id(), "stackctl snapshot")?,
        None => repo.reference(refname, oid, false, "stackctl snapshot")?,
    };
    Ok(Some(oid))
}

/// The identity snapshots are committed with.
pub fn signature() -> Result<git2::Signature<'static>, git2::Error> {
    git2::Signature::now("stackctl", "stackctl@localhost")
}

/// `YYYY-mm-dd HH:MM:SS` (UTC) of a unix time, for commit messages.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The message of a snapshot commit.
pub fn message(now_secs: i64, built: &Built) -> String {
    format!(
        "snapshot {} UTC: {} files, {} bytes",
        format_utc(now_secs),
        built.files,
        built.bytes
    )
}
