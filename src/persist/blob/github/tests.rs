use super::*;

#[test]
fn next_links_are_found_among_others() {
    let link = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=3>; rel="next", <https://api.github.com/x?page=9>; rel="last""#;
    assert_eq!(
        next_link(link).as_deref(),
        Some("https://api.github.com/x?page=3")
    );
    assert_eq!(next_link(r#"<https://x>; rel="last""#), None);
}

#[test]
fn part_names_round_trip_and_only_the_canonical_spelling_parses() {
    let oid = "ab".repeat(32);
    let name = part_name(&oid, 2, 3);
    assert_eq!(name, format!("{oid}.part-002-of-003"));
    assert_eq!(parse_part_name(&name), Some(([0xab; 32], 2, 3)));
    assert_eq!(
        parse_part_name(&part_name(&oid, 999, 999)),
        Some(([0xab; 32], 999, 999))
    );
    for bad in [
        format!("{oid}.part-2-of-3"),
        format!("{oid}.part-000-of-003"),
        format!("{oid}.part-004-of-003"),
        format!("{oid}.part-001-of-1000"),
        format!("{oid}.part-001-of-003.tmp"),
        format!("{}.part-001-of-003", oid.to_uppercase()),
        format!("{oid}-model.bin"),
        oid.clone(),
    ] {
        assert_eq!(parse_part_name(&bad), None, "{bad}");
    }
}

#[test]
fn parts_are_even_cover_the_blob_and_stay_under_the_part_size() {
    for (size, part) in [
        (10u64, 4u64),
        (12, 4),
        (13, 4),
        (4 << 30, 1 << 30),
        ((5 << 30) + 7, 1 << 30),
    ] {
        let n = size.div_ceil(part);
        let sizes = part_sizes(size, n);
        assert_eq!(sizes.len() as u64, n);
        assert_eq!(sizes.iter().sum::<u64>(), size, "{size}/{part}");
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1 && *max <= part && *min > 0, "{sizes:?}");
        for (i, s) in sizes.iter().enumerate() {
            assert_eq!(part_len(size, n, i as u64), *s);
        }
    }
}

fn asset(id: u64, name: String, size: u64, state: &str) -> Asset {
    Asset {
        id,
        name,
        size,
        state: state.into(),
        digest: None,
        created_at: None,
    }
}

#[test]
fn only_a_complete_set_of_parts_of_the_right_sizes_holds_a_blob() {
    let p = Pointer {
        sha256: [7; 32],
        size: 10,
    };
    let oid = p.oid();
    // 10 bytes in 3 parts: 4, 3, 3.
    let set = |skip: u64, bad_size: u64, state: &str| {
        let mut idx = Index::default();
        let v: Vec<Asset> = (1..=3)
            .filter(|i| *i != skip)
            .map(|i| {
                let size = if i == bad_size {
                    9
                } else {
                    part_len(10, 3, i - 1)
                };
                // Listed out of order, and across two shards.
                asset(
                    10 - i,
                    part_name(&oid, i, 3),
                    size,
                    if i == 2 { state } else { "uploaded" },
                )
            })
            .collect();
        idx.assets.insert(1, v[..1].to_vec());
        idx.assets.insert(2, v[1..].to_vec());
        idx
    };
    let whole = set(0, 0, "uploaded");
    let got: Vec<_> = whole
        .complete_parts(&p)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(got, vec![9, 8, 7], "in part order");
    assert!(whole.locate(&p).is_some());
    assert!(
        set(2, 0, "uploaded").complete_parts(&p).is_none(),
        "a part missing"
    );
    assert!(
        set(0, 3, "uploaded").complete_parts(&p).is_none(),
        "a wrong size"
    );
    assert!(
        set(0, 0, "starter").complete_parts(&p).is_none(),
        "half-uploaded"
    );
    assert!(set(2, 0, "uploaded").locate(&p).is_none());
    // Another blob's parts never count.
    let other = Pointer {
        sha256: [8; 32],
        size: 10,
    };
    assert!(whole.complete_parts(&other).is_none());
    // An incomplete layout next to a complete one: the complete one.
    let mut mixed = set(0, 0, "uploaded");
    mixed
        .assets
        .get_mut(&1)
        .unwrap()
        .push(asset(50, part_name(&oid, 1, 2), 5, "uploaded"));
    assert_eq!(mixed.complete_parts(&p).unwrap().len(), 3);
}

#[test]
fn limits_can_only_be_lowered() {
    let s = GithubStore::new(API, "o/r", "blobs", None)
        .unwrap()
        .with_lower_limits(usize::MAX, u64::MAX);
    assert_eq!(s.max_assets.load(Ordering::Relaxed), MAX_ASSETS);
    assert_eq!(s.max_asset_size, MAX_ASSET_SIZE);
    assert_eq!(s.part_size(), 1 << 30);
    let s = s.with_lower_limits(0, 0);
    assert_eq!(s.max_assets.load(Ordering::Relaxed), 1);
    assert_eq!(s.part_size(), 1);
}

#[test]
fn shards_are_tag_then_tag_2() {
    let s = GithubStore::new(API, "o/r", "blobs", None).unwrap();
    assert_eq!(s.shard_tag(0), "blobs");
    assert_eq!(s.shard_tag(1), "blobs-2");
}
