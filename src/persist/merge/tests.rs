use super::tree::valid_path;
use super::*;

fn e(n: u8) -> Entry {
    Entry {
        oid: Oid::from_bytes(&[n; 20]).unwrap(),
        mode: 0o100644,
    }
}

fn files(list: &[(&str, u8)]) -> Files {
    list.iter().map(|(p, n)| (p.to_string(), e(*n))).collect()
}

fn take(p: &str, n: Option<u8>) -> Action {
    Action::Take {
        path: p.into(),
        theirs: n.map(e),
    }
}

fn conflict(p: &str, n: u8) -> Action {
    Action::Conflict {
        path: p.into(),
        copy: format!("{p}.conflict-abc"),
        theirs: e(n),
    }
}

#[test]
fn each_file_is_decided_against_the_base() {
    let base = files(&[("d/same", 1), ("d/theirs", 1), ("d/both", 1), ("d/del", 1)]);
    // `base` with files set to new contents and others removed.
    let edit = |set: &[(&str, u8)], del: &[&str]| {
        let mut f = base.clone();
        f.extend(files(set));
        f.retain(|p, _| !del.contains(&p.as_str()));
        f
    };
    let table: &[(&str, Files, Files, Vec<Action>)] = &[
        ("nothing moved", edit(&[], &[]), edit(&[], &[]), vec![]),
        (
            "only theirs changed a file: theirs",
            edit(&[], &[]),
            edit(&[("d/theirs", 2)], &[]),
            vec![take("d/theirs", Some(2))],
        ),
        (
            "only ours changed: ours",
            edit(&[("d/same", 3)], &[]),
            edit(&[], &[]),
            vec![],
        ),
        (
            "both changed differently: ours stays, theirs beside it",
            edit(&[("d/both", 3)], &[]),
            edit(&[("d/both", 4)], &[]),
            vec![conflict("d/both", 4)],
        ),
        (
            "both made the same change: nothing to do",
            edit(&[("d/both", 5)], &[]),
            edit(&[("d/both", 5)], &[]),
            vec![],
        ),
        (
            "they added a file and deleted an unchanged one",
            edit(&[], &[]),
            edit(&[("d/new", 9)], &["d/del"]),
            vec![take("d/del", None), take("d/new", Some(9))],
        ),
        (
            "they deleted what we changed: ours stays",
            edit(&[("d/del", 7)], &[]),
            edit(&[], &["d/del"]),
            vec![],
        ),
        (
            "we deleted what they changed: their change comes back",
            edit(&[], &["d/del"]),
            edit(&[("d/del", 8)], &[]),
            vec![take("d/del", Some(8))],
        ),
    ];
    for (what, ours, theirs, want) in table {
        assert_eq!(&decide(&base, ours, theirs, "abc", None), want, "{what}");
    }
}

#[test]
fn without_a_base_only_files_both_hold_differently_conflict() {
    let ours = files(&[("a", 1), ("b", 2), ("c", 3)]);
    let theirs = files(&[("b", 2), ("c", 4), ("d", 5)]);
    assert_eq!(
        decide(&Files::new(), &ours, &theirs, "abc", None),
        vec![conflict("c", 4), take("d", Some(5))]
    );
}

#[test]
fn names_a_tree_cannot_hold_are_left_out() {
    for (p, ok) in [
        ("a/b", true),
        ("a/../b", false),
        ("..", false),
        ("a/.git/x", false),
        ("a//b", false),
        (".stackctl/modes", true),
    ] {
        assert_eq!(valid_path(p), ok, "{p}");
    }
}

#[test]
fn files_outside_their_persisted_paths_are_not_their_deletions() {
    let base = files(&[("a/x", 1), ("b/y", 1), ("bb/z", 1)]);
    let theirs = files(&[("a/x", 2)]);
    let paths = ["a".to_string(), "b".to_string()];
    let view = their_view(&theirs, &base, Some(&paths));
    assert_eq!(view, files(&[("a/x", 2), ("bb/z", 1)]));
    // `b/y` they persist and deleted; `bb/z` they never saw.
    assert_eq!(
        decide(&base, &base, &view, "abc", None),
        vec![take("a/x", Some(2)), take("b/y", None)]
    );
    assert_eq!(their_view(&theirs, &base, None), theirs);
}

#[test]
fn derived_files_are_not_merged_and_clashing_names_go_beside() {
    let base = files(&[(".stackctl/modes", 1), ("x/f", 1)]);
    let ours = files(&[(".stackctl/modes", 2), ("x/f", 1), ("x/dir/inner", 1)]);
    let theirs = files(&[
        (".stackctl/modes", 3),
        (".gitattributes", 3),
        ("x/f", 1),
        ("x/dir", 6),
    ]);
    assert_eq!(
        decide(&base, &ours, &theirs, "abc", None),
        vec![conflict("x/dir", 6)]
    );
}

#[test]
fn a_changed_live_file_turns_a_take_into_a_conflict_copy() {
    assert_eq!(demote(take("a", Some(2)), "abc"), Some(conflict("a", 2)));
    assert_eq!(demote(take("a", None), "abc"), None);
    assert_eq!(demote(conflict("a", 2), "abc"), Some(conflict("a", 2)));
    let merged = apply(
        &files(&[("a", 1), ("b", 1)]),
        &[conflict("a", 2), take("b", None), take("c", Some(3))],
    );
    assert_eq!(merged, files(&[("a", 1), ("a.conflict-abc", 2), ("c", 3)]));
}

#[test]
fn a_newer_snapshot_of_theirs_takes_the_name_and_ours_goes_beside_it() {
    let base = files(&[("a", 1), ("b", 1)]);
    let ours = files(&[("a", 2), ("b", 1)]);
    let theirs = files(&[("a", 3), ("b", 4)]);
    let got = decide(&base, &ours, &theirs, "abc", Some("def"));
    let newer = Action::Newer {
        path: "a".into(),
        copy: "a.conflict-def".into(),
        ours: e(2),
        theirs: e(3),
    };
    assert_eq!(got, vec![newer.clone(), take("b", Some(4))]);
    assert_eq!(
        apply(&ours, &got),
        files(&[("a", 3), ("a.conflict-def", 2), ("b", 4)])
    );
    assert_eq!(
        modes("0644 a\n", "0600 a\n", &theirs, &got),
        "0600 a\n0644 a.conflict-def\n"
    );
    // A live file changed since our snapshot keeps the name after all.
    assert_eq!(demote(newer, "abc"), Some(conflict("a", 3)));
}

#[test]
fn modes_follow_the_files_taken_from_their_side() {
    let ours = "0755 d\n0644 d/a\n0600 d/gone\n";
    let theirs = "0755 d\n0700 d/a\n0640 d/new\n0750 d/sub\n0644 d/sub/x\n";
    let their_files = files(&[("d/a", 2), ("d/new", 3), ("d/sub/x", 4)]);
    let actions = [
        conflict("d/a", 2),
        take("d/gone", None),
        take("d/new", Some(3)),
    ];
    assert_eq!(
        modes(ours, theirs, &their_files, &actions),
        "0755 d\n0644 d/a\n0700 d/a.conflict-abc\n0640 d/new\n0750 d/sub\n"
    );
}

#[test]
fn gitattributes_keep_both_sides_lines_and_track_conflict_copies() {
    let ours = "# written by stackctl\n/a filter=lfs diff=lfs merge=lfs -text\n";
    let theirs =
        "# x\nbig filter=lfs diff=lfs merge=lfs -text\n/a filter=lfs diff=lfs merge=lfs -text\n";
    let got = gitattributes(Some(ours), Some(theirs), &[conflict("big", 1)]).unwrap();
    assert_eq!(
        got,
        "# written by stackctl\n\
         /a filter=lfs diff=lfs merge=lfs -text\n\
         /big.conflict-abc filter=lfs diff=lfs merge=lfs -text\n\
         big filter=lfs diff=lfs merge=lfs -text\n"
    );
    assert_eq!(gitattributes(None, None, &[]), None);
}
