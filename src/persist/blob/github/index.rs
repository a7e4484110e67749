//! The release assets as GitHub lists them, and the index of which assets
//! hold which blob (whole, or as a complete set of parts).

use super::*;

#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct Release {
    pub(super) id: u64,
    pub(super) tag_name: String,
    pub(super) upload_url: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct Asset {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) size: u64,
    #[serde(default)]
    pub(super) state: String,
    #[serde(default)]
    pub(super) digest: Option<String>,
    /// `2024-01-02T03:04:05Z`.
    #[serde(default)]
    pub(super) created_at: Option<String>,
}

impl Asset {
    /// Complete and matching `p` (by digest when GitHub gave one).
    pub(super) fn holds(&self, p: &Pointer) -> bool {
        self.state == "uploaded"
            && self.size == p.size
            && self
                .digest
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(&format!("sha256:{}", p.oid())))
    }
}

/// The shards and their assets, as last listed.
#[derive(Default)]
pub(super) struct Index {
    pub(super) releases: Vec<Release>,
    /// Release id → its assets.
    pub(super) assets: HashMap<u64, Vec<Asset>>,
}

impl Index {
    pub(super) fn find(&self, name: &str) -> Option<(u64, &Asset)> {
        self.assets
            .iter()
            .find_map(|(rid, v)| v.iter().find(|a| a.name == name).map(|a| (*rid, a)))
    }

    /// The assets of a complete set of parts of `p`, in order: every part
    /// of one layout uploaded with the size the layout gives it. A set
    /// with a part missing, half-uploaded or of another size is not one.
    /// (Per-part digests cannot be checked here: the pointer only knows the
    /// whole file's hash. Each part was checked against its own hash when
    /// it was uploaded, and a restore checks the whole file.)
    pub(super) fn complete_parts(&self, p: &Pointer) -> Option<Vec<Asset>> {
        let mut layouts: BTreeMap<u64, Vec<Option<&Asset>>> = BTreeMap::new();
        for a in self.assets.values().flatten() {
            let Some((sha, i, n)) = parse_part_name(&a.name) else {
                continue;
            };
            if sha != p.sha256 || n > p.size || a.state != "uploaded" {
                continue;
            }
            if a.size == part_len(p.size, n, i - 1) {
                // `i <= n <= MAX_PARTS`: small indexes.
                let slots = layouts.entry(n).or_insert_with(|| vec![None; n as usize]);
                slots[(i - 1) as usize] = Some(a);
            }
        }
        layouts
            .into_values()
            .find_map(|slots| slots.into_iter().map(|a| a.cloned()).collect())
    }

    /// Where the bytes of `p` can be read from: a whole asset that holds
    /// it, else a complete set of parts, else (as before parts existed) an
    /// uploaded asset of its name, whose bytes the restore will verify.
    pub(super) fn locate(&self, p: &Pointer) -> Option<Vec<Asset>> {
        let whole = self.find(&p.oid()).map(|(_, a)| a);
        if let Some(a) = whole.filter(|a| a.holds(p)) {
            return Some(vec![a.clone()]);
        }
        self.complete_parts(p).or_else(|| {
            whole
                .filter(|a| a.state == "uploaded")
                .map(|a| vec![a.clone()])
        })
    }
}
