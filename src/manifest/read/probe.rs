//! Readiness and liveness probes of a service.

use super::*;

const PROBE_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "file",
    "log",
    "interval",
    "timeout",
    "failures",
    "initial_delay",
];
const PROBE_CHECKS: &[&str] = &["http", "tcp", "exec", "file", "log"];

impl Reader<'_> {
    pub(super) fn probe(
        &mut self,
        node: &Node,
        key: &str,
        working_dir: &Path,
        interval: Duration,
        failures: u32,
    ) -> Option<Probe> {
        let f = self.fields(node, key, PROBE_KEYS)?;
        let present: Vec<&str> = PROBE_CHECKS
            .iter()
            .copied()
            .filter(|c| f.get(c).is_some())
            .collect();
        if present.len() != 1 {
            let message = if present.is_empty() {
                "no check given".to_string()
            } else {
                format!("several checks given ({})", present.join(", "))
            };
            self.problem(
                node.pos,
                key,
                message,
                Some("give exactly one of http, tcp, exec, file, log".into()),
            );
            return None;
        }
        let kind = present[0];
        let cnode = f.get(kind)?;
        let ckey = f.key(kind);
        let check = match kind {
            "exec" => ProbeCheck::Exec(self.command(cnode, &ckey)?),
            "http" => {
                let url = self.text(cnode, &ckey)?;
                if !url.starts_with("http://") {
                    self.problem(
                        cnode.pos,
                        &ckey,
                        format!("`{url}` is not an http:// URL"),
                        Some("probes speak plain HTTP, e.g. `http://127.0.0.1:8000/health`".into()),
                    );
                    return None;
                }
                ProbeCheck::Http(url)
            }
            "tcp" => {
                let addr = self.text(cnode, &ckey)?;
                if addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    self.problem(
                        cnode.pos,
                        &ckey,
                        format!("`{addr}` is not HOST:PORT"),
                        Some("e.g. `127.0.0.1:6099`".into()),
                    );
                    return None;
                }
                ProbeCheck::Tcp(addr)
            }
            "file" => {
                let p = self.text(cnode, &ckey)?;
                ProbeCheck::File(self.path(working_dir, &p))
            }
            _ => {
                let t = self.text(cnode, &ckey)?;
                if t.is_empty() {
                    self.problem(cnode.pos, &ckey, "the text to wait for is empty", None);
                    return None;
                }
                ProbeCheck::Log(t)
            }
        };
        let interval = self.duration(f.field("interval").as_ref(), interval);
        if interval.is_zero() {
            self.problem(f.pos, key, "`interval` must be above zero", None);
        }
        Some(Probe {
            check,
            interval,
            timeout: self.duration(f.field("timeout").as_ref(), Duration::from_secs(2)),
            failures: self.number(f.field("failures").as_ref(), failures).max(1),
            initial_delay: self.duration(f.field("initial_delay").as_ref(), Duration::ZERO),
        })
    }
}
