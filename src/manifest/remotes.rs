//! What kind of remote a `persist.remote` names, by its text alone. Both
//! the reader (defaults) and the model (`offload_binary: auto`) ask, so it
//! sits below both.

/// An `http(s)://` URL on Hugging Face (`huggingface.co` or `hf.co`, any
/// letter case, with or without a port): the remotes `offload_binary: auto`
/// is for. Other schemes have no LFS endpoint to offload to.
pub fn looks_like_hugging_face(remote: &str) -> bool {
    let r = remote.trim();
    let Some(rest) = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "huggingface.co" || host == "hf.co"
}

/// `owner/repo` or a github.com URL.
pub fn looks_like_github(remote: &str) -> bool {
    let r = remote.trim();
    if r.contains("github.com") {
        return true;
    }
    let parts: Vec<&str> = r.split('/').collect();
    parts.len() == 2
        && !r.starts_with('.')
        && !r.contains(':')
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_remotes_are_recognised_by_host() {
        for (remote, yes) in [
            ("https://huggingface.co/datasets/u/d", true),
            ("https://HuggingFace.co/datasets/u/d.git", true),
            ("http://hf.co/datasets/u/d", true),
            ("https://huggingface.co:443/u/d", true),
            ("https://huggingface.co./u/d", true),
            ("https://huggingface.com/u/d", false),
            ("https://evil.example/huggingface.co/u/d", false),
            ("https://huggingface.co.evil.example/u/d", false),
            ("git@hf.co:u/d", false),
            ("u/d", false),
            ("/srv/huggingface.co", false),
        ] {
            assert_eq!(looks_like_hugging_face(remote), yes, "{remote}");
        }
    }
}
