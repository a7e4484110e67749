//! Readiness and liveness probes of a service.

use serde::Deserialize;

use super::*;

/// A probe as written; the field order is the order of the key hints.
#[derive(Deserialize)]
struct RawProbe {
    http: Option<Leaf<String>>,
    tcp: Option<Leaf<String>>,
    exec: Option<Field>,
    file: Option<Leaf<String>>,
    log: Option<Leaf<String>>,
    interval: Option<Leaf<Duration>>,
    timeout: Option<Leaf<Duration>>,
    failures: Option<Leaf<u32>>,
    initial_delay: Option<Leaf<Duration>>,
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
        let present: Vec<&str> = [
            ("http", f.http.is_some()),
            ("tcp", f.tcp.is_some()),
            ("exec", f.exec.is_some()),
            ("file", f.file.is_some()),
            ("log", f.log.is_some()),
        ]
        .iter()
        .filter_map(|(name, given)| given.then_some(*name))
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
        let check = if let Some(c) = &f.exec {
            ProbeCheck::Exec(self.command(&c.node, &c.key)?)
        } else if let Some(l) = &f.http {
            let url = self.val(l)?;
            if !url.starts_with("http://") {
                self.problem(
                    l.pos,
                    &l.key,
                    format!("`{url}` is not an http:// URL"),
                    Some("probes speak plain HTTP, e.g. `http://127.0.0.1:8000/health`".into()),
                );
                return None;
            }
            ProbeCheck::Http(url)
        } else if let Some(l) = &f.tcp {
            let addr = self.val(l)?;
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                self.problem(
                    l.pos,
                    &l.key,
                    format!("`{addr}` is not HOST:PORT"),
                    Some("e.g. `127.0.0.1:6099`".into()),
                );
                return None;
            }
            ProbeCheck::Tcp(addr)
        } else if let Some(l) = &f.file {
            let p = self.val(l)?;
            ProbeCheck::File(self.path(working_dir, &p))
        } else {
            let l = f.log.as_ref()?;
            let t = self.val(l)?;
            if t.is_empty() {
                self.problem(l.pos, &l.key, "the text to wait for is empty", None);
                return None;
            }
            ProbeCheck::Log(t)
        };
        let interval = self.val(&f.interval).unwrap_or(interval);
        if interval.is_zero() {
            self.problem(node.pos, key, "`interval` must be above zero", None);
        }
        Some(Probe {
            check,
            interval,
            timeout: self.val(&f.timeout).unwrap_or(Duration::from_secs(2)),
            failures: self.val(&f.failures).unwrap_or(failures).max(1),
            initial_delay: self.val(&f.initial_delay).unwrap_or_default(),
        })
    }
}
