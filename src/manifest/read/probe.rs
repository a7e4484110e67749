//! Readiness and liveness probes of a service.

use serde::Deserialize;

use super::*;

/// A probe as written; the field order is the order of the key hints.
#[derive(Deserialize)]
struct RawProbe {
    http: Option<Field>,
    tcp: Option<Field>,
    exec: Option<Field>,
    file: Option<Field>,
    log: Option<Field>,
    interval: Option<Field>,
    timeout: Option<Field>,
    failures: Option<Field>,
    initial_delay: Option<Field>,
}

impl Reader<'_> {
    pub(super) fn probe(
        &mut self,
        node: &Node,
        key: &str,
        working_dir: &Path,
        interval: Duration,
        failures: u32,
    ) -> Option<Probe> {
        let f: RawProbe = self.section(node, key)?;
        let checks = [
            ("http", &f.http),
            ("tcp", &f.tcp),
            ("exec", &f.exec),
            ("file", &f.file),
            ("log", &f.log),
        ];
        let present: Vec<(&str, &Field)> = checks
            .iter()
            .filter_map(|(name, c)| c.as_ref().map(|c| (*name, c)))
            .collect();
        if present.len() != 1 {
            let message = if present.is_empty() {
                "no check given".to_string()
            } else {
                format!(
                    "several checks given ({})",
                    present
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            self.problem(
                node.pos,
                key,
                message,
                Some("give exactly one of http, tcp, exec, file, log".into()),
            );
            return None;
        }
        let (
            kind,
            Field {
                key: ckey,
                node: cnode,
            },
        ) = present[0];
        let check = match kind {
            "exec" => ProbeCheck::Exec(self.command(cnode, ckey)?),
            "http" => {
                let url = self.text(cnode, ckey)?;
                if !url.starts_with("http://") {
                    self.problem(
                        cnode.pos,
                        ckey,
                        format!("`{url}` is not an http:// URL"),
                        Some("probes speak plain HTTP, e.g. `http://127.0.0.1:8000/health`".into()),
                    );
                    return None;
                }
                ProbeCheck::Http(url)
            }
            "tcp" => {
                let addr = self.text(cnode, ckey)?;
                if addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    self.problem(
                        cnode.pos,
                        ckey,
                        format!("`{addr}` is not HOST:PORT"),
                        Some("e.g. `127.0.0.1:6099`".into()),
                    );
                    return None;
                }
                ProbeCheck::Tcp(addr)
            }
            "file" => {
                let p = self.text(cnode, ckey)?;
                ProbeCheck::File(self.path(working_dir, &p))
            }
            _ => {
                let t = self.text(cnode, ckey)?;
                if t.is_empty() {
                    self.problem(cnode.pos, ckey, "the text to wait for is empty", None);
                    return None;
                }
                ProbeCheck::Log(t)
            }
        };
        let interval = self.duration(&f.interval, interval);
        if interval.is_zero() {
            self.problem(node.pos, key, "`interval` must be above zero", None);
        }
        Some(Probe {
            check,
            interval,
            timeout: self.duration(&f.timeout, Duration::from_secs(2)),
            failures: self.number(&f.failures, failures).max(1),
            initial_delay: self.duration(&f.initial_delay, Duration::ZERO),
        })
    }
}
