//! Keeps the documentation whole: every relative link in the READMEs,
//! CONTRIBUTING.md, CHANGELOG.md, bench/ and the two books in docs/ resolves
//! to a file (and, with `#anchor`, to a heading of that file); every chapter a
//! SUMMARY.md lists exists and every chapter is listed; the English and
//! Chinese books have the same chapters in the same order, each with the
//! same headings, code blocks and table rows (a change made in one language
//! only shows).
//!
//! Its own test target, not a module of `tests/integration`: it reads files
//! only, needs neither the binary nor any tool, and so runs (and fails) the
//! same on every machine. Anchors follow the slug rule GitHub and mdBook share
//! for headings (lower case; letters, digits, `-` and `_` kept; spaces become
//! `-`; anything else dropped; a repeated slug gets `-1`, `-2`, ...).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked, relative to the repository.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files: Vec<PathBuf> = [
        "README.md",
        "README.zh-CN.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    markdown_under(&root.join("bench"), &mut files);
    markdown_under(&root.join("docs"), &mut files);
    files
}

fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// Lines outside fenced code blocks, with their 1-based numbers: a `](` in a
/// code sample is not a link.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The targets of inline links `[text](target)` on one line, inline code
/// spans removed first (a backticked `](x)` is text, not a link).
fn link_targets(line: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            plain.push(c);
        }
    }
    let mut targets = Vec::new();
    let mut rest = plain.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        // `[a](b "title")`: the target is the first word.
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &after[end..];
    }
    targets
}

/// The anchor a heading gets (the rule GitHub and mdBook share).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a file's headings make, repeats numbered as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `%XX` escapes decoded (links to anchors with CJK text may be escaped).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The problems with one relative link target of `doc`, if any.
fn check_target(doc: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link target".into());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None; // not ours to check: the tests reach no network
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(percent_decode(a))),
        None => (target, None),
    };
    let file = if path.is_empty() {
        doc.to_path_buf()
    } else {
        doc.parent()?.join(percent_decode(path))
    };
    if !file.exists() {
        return Some(format!("`{target}`: no file {}", file.display()));
    }
    let anchor = anchor?;
    if file.is_dir() || file.extension().is_none_or(|e| e != "md") {
        return None; // anchors into non-Markdown files are line numbers and the like
    }
    let text = fs::read_to_string(&file).ok()?;
    if anchors(&text).contains(&anchor) {
        None
    } else {
        Some(format!(
            "`{target}`: no heading of {} makes the anchor `#{anchor}`",
            file.display()
        ))
    }
}

#[test]
fn every_relative_link_resolves() {
    let root = repo();
    let mut problems = Vec::new();
    let docs = documents();
    assert!(docs.len() > 10, "found only {docs:?}: is docs/ there?");
    for doc in &docs {
        let text = fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if let Some(why) = check_target(doc, &target) {
                    let name = doc.strip_prefix(&root).unwrap_or(doc).display();
                    problems.push(format!("{name}:{n}: {why}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links in the documentation (fix the link or the heading it names):\n{}",
        problems.join("\n")
    );
}

/// The chapter files a SUMMARY.md lists, in order.
fn chapters(book: &Path) -> Vec<String> {
    let summary = book.join("src/SUMMARY.md");
    let text = fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("{}: {e} (each book needs one)", summary.display()));
    prose_lines(&text)
        .into_iter()
        .flat_map(|(_, line)| link_targets(line))
        .collect()
}

#[test]
fn both_books_list_every_chapter_and_the_same_ones() {
    let docs = repo().join("docs");
    let mut lists = Vec::new();
    for lang in ["en", "zh"] {
        let book = docs.join(lang);
        assert!(
            book.join("book.toml").is_file(),
            "{}/book.toml is missing: mdbook needs it",
            book.display()
        );
        let listed = chapters(&book);
        for chapter in &listed {
            assert!(
                book.join("src").join(chapter).is_file(),
                "docs/{lang}/src/SUMMARY.md lists `{chapter}`, which does not exist"
            );
        }
        let mut files = Vec::new();
        markdown_under(&book.join("src"), &mut files);
        for file in files {
            let rel = file.strip_prefix(book.join("src")).unwrap_or(&file);
            let rel = rel.to_string_lossy().into_owned();
            assert!(
                rel == "SUMMARY.md" || listed.contains(&rel),
                "docs/{lang}/src/{rel} is not in docs/{lang}/src/SUMMARY.md: list it, or remove it"
            );
        }
        lists.push(listed);
    }
    assert_eq!(
        lists[0], lists[1],
        "docs/en and docs/zh must have the same chapters in the same order (left: en, right: zh)"
    );
}

/// The shape of a chapter: headings, fenced blocks and table rows. A
/// translation keeps all three, so a section added to one book only shows.
fn shape(text: &str) -> (usize, usize, usize) {
    let fences = text
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    let prose = prose_lines(text);
    let headings = prose.iter().filter(|(_, l)| l.starts_with('#')).count();
    let rows = prose.iter().filter(|(_, l)| l.starts_with('|')).count();
    (headings, fences, rows)
}

#[test]
fn each_chapter_has_the_same_shape_in_both_books() {
    let docs = repo().join("docs");
    for chapter in chapters(&docs.join("en")) {
        let read = |lang: &str| {
            let path = docs.join(lang).join("src").join(&chapter);
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        assert_eq!(
            shape(&read("en")),
            shape(&read("zh")),
            "{chapter}: (headings, code fences, table rows) differ between docs/en (left) and \
             docs/zh (right): a change made to one book only? Translate it into the other."
        );
    }
}

#[test]
fn slugs_follow_the_heading_rule() {
    assert_eq!(slug("How `up` runs a stack"), "how-up-runs-a-stack");
    assert_eq!(
        slug("Admin API, page and password"),
        "admin-api-page-and-password"
    );
    assert_eq!(slug("stack.yaml reference"), "stackyaml-reference");
    assert_eq!(slug("没有 shell 时的恢复"), "没有-shell-时的恢复");
    assert_eq!(slug("管理 API、页面和密码"), "管理-api页面和密码");
    let text = "# A\n## A\n```\n# not a heading\n```\n## B b\n";
    let made: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(made, ["a", "a-1", "b-b"]);
    assert_eq!(
        link_targets("see [x](a.md#b) and `[y](no.md)` or [z](c.md \"t\")"),
        ["a.md#b", "c.md"]
    );
}
