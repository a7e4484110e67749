//! Building the gateway at start: which route table and which admin
//! password win (see the module docs of [`super`]), the original
//! deployment's files imported once, and backend ports mapped to services.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::RwLock;

use arc_swap::ArcSwap;

use crate::shutdown::{CancellationToken, TaskTracker};
use crate::status::StatusBoard;

use super::{Gateway, GatewayError, Shared};
use crate::gateway::auth::{Auth, LimitConfig};
use crate::gateway::proxy::Upstream;
use crate::gateway::router::Router;
use crate::gateway::rules::{BackendPolicy, Table};
use crate::gateway::state::State;
use crate::gateway::tunnel::Tunnels;
use crate::gateway::upstream::UpstreamConfig;
use crate::gateway::{auth, clocks, fanout, migrate, router, rules, state};

/// What starts a fingerprint of today's form. Earlier versions hashed
/// the manifest's routes as written (16 hex digits, no prefix).
const FINGERPRINT_V2: &str = "v2:";

/// Fingerprint of the manifest's validated table: of what the routes mean,
/// not of how they are written, so a cosmetic edit (the default
/// `priority: 0` written out, keys reordered) keeps the live table.
fn manifest_fingerprint(table: &Table) -> String {
    let json = serde_json::to_vec(table).unwrap_or_default();
    format!("{FINGERPRINT_V2}{:016x}", router::fnv1a(&json))
}

/// Backend port → service name, from each service's readiness (or
/// liveness) probe target: `http:` URL or `tcp:` address. Simple and
/// enough for one container, where every backend is a local port.
pub fn service_ports(services: &[crate::manifest::Service]) -> HashMap<u16, String> {
    use crate::manifest::ProbeCheck;
    let mut out = HashMap::new();
    for s in services {
        for probe in [&s.readiness, &s.liveness].into_iter().flatten() {
            let port = match &probe.check {
                ProbeCheck::Http(url) => url
                    .split_once("://")
                    .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
                    .and_then(|auth| rules::parse_backend(&format!("http://{auth}")).ok())
                    .map(|b| b.addr.port()),
                ProbeCheck::Tcp(addr) => addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
                _ => None,
            };
            if let Some(port) = port {
                out.entry(port).or_insert_with(|| s.name.clone());
            }
        }
    }
    out
}

impl Gateway {
    /// Build the gateway: validate the manifest routes, load or create the
    /// state file (route table + Argon2id password hash), and generate a
    /// password if none is configured or stored (printed once, written 0600
    /// to `admin.password_file`). See the module docs for precedence.
    pub fn new(
        cfg: &crate::manifest::Gateway,
        status: StatusBoard,
    ) -> Result<Gateway, GatewayError> {
        let policy = BackendPolicy::new(&cfg.allow_backends, cfg.listen);
        let manifest_table = rules::validate(
            cfg.default_backend.as_deref().unwrap_or(""),
            cfg.routes.iter().cloned().map(Ok),
            &policy,
        )
        .map_err(|source| GatewayError::Routes {
            pos: source
                .rule_index()
                .and_then(|i| cfg.route_pos.get(i).copied()),
            source,
        })?;
        let fingerprint = manifest_fingerprint(&manifest_table);
        let loaded = state::load(&cfg.state_file)?;
        let mut st = loaded.clone().unwrap_or(State {
            version: 1,
            ..State::default()
        });
        let imported = import_original(cfg, &policy, &mut st, &fingerprint, &manifest_table)?;

        let table = match (&st.table, &st.manifest_routes) {
            // A fingerprint of the older form cannot be compared: taking it
            // as a change would drop every Space's live edits at the first
            // start after the upgrade, so it counts as unchanged once.
            (Some(live), Some(fp)) if *fp == fingerprint || !fp.starts_with(FINGERPRINT_V2) => {
                if *fp != fingerprint {
                    tracing::info!(file = %cfg.state_file.display(), "gateway: the state file's fingerprint of the manifest's routes is from an older stackctl, so the live route table is kept; if this deploy also changed `gateway.routes`, apply them with `stackctl routes set` or the admin page (or change them in the manifest again: the next start then replaces the live table)");
                }
                let rules = live.rules.iter().cloned().map(Ok);
                match rules::validate(&live.default_backend, rules, &policy) {
                    Ok(t) => {
                        tracing::info!(file = %cfg.state_file.display(), rules = t.rules.len(), "gateway: live route table restored from the state file");
                        t
                    }
                    Err(e) => {
                        tracing::warn!(file = %cfg.state_file.display(), error = %e, "gateway: the saved route table is no longer valid; using the manifest's routes");
                        manifest_table
                    }
                }
            }
            (Some(_), _) => {
                tracing::info!(file = %cfg.state_file.display(), "gateway: the manifest's routes changed; they replace the live route table");
                manifest_table
            }
            (None, _) => manifest_table,
        };
        st.table = Some(table.clone());
        st.manifest_routes = Some(fingerprint);

        let phc = settle_password(cfg, &mut st)?;
        if loaded.as_ref() != Some(&st) {
            state::save(&cfg.state_file, &st)?;
        }
        if let Some(path) = imported {
            // The hash now lives in the state file: the old file's plaintext
            // password must not be pushed with the next snapshot.
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "gateway: imported the original admin_config.json and removed it")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "gateway: imported the original admin_config.json but cannot remove it; delete it by hand")
                }
            }
        }

        let router =
            Router::new(table).map_err(|source| GatewayError::Routes { pos: None, source })?;
        let shared = Shared {
            router: ArcSwap::from_pointee(router),
            status,
            auth: Auth::new(phc, LimitConfig::default()),
            upstream: Upstream::new(UpstreamConfig {
                connect: cfg.timeouts.connect,
                response: cfg.timeouts.response,
                pool_idle: cfg.timeouts.pool_idle,
                max_body: cfg.max_body,
            })
            .with_cap(fanout::Cap {
                max: cfg.backend_connections.max,
                queue: cfg.backend_connections.queue,
            }),
            policy: RwLock::new(policy),
            trusted: cfg.trusted_proxies.clone(),
            state_path: cfg.state_file.clone(),
            state: tokio::sync::Mutex::new(st),
            password_file: cfg.admin.password_file.clone(),
            listen: RwLock::new(cfg.listen),
            service_ports: HashMap::new(),
            restored: AtomicBool::new(false),
            client_timeouts: clocks::ClientTimeouts {
                header_read: cfg.timeouts.header_read,
                idle: cfg.timeouts.idle,
                send: cfg.timeouts.send,
            },
            tunnels: Tunnels {
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                idle: cfg.timeouts.send,
            },
            recovery: None,
        };
        Ok(Gateway { shared })
    }
}

/// Seed a gateway that has no saved table from the original deployment's
/// `admin_config.json` (`gateway.import_from`). Returns the file to remove
/// once the state is saved.
fn import_original(
    cfg: &crate::manifest::Gateway,
    policy: &BackendPolicy,
    st: &mut State,
    fingerprint: &str,
    manifest_table: &Table,
) -> Result<Option<PathBuf>, GatewayError> {
    let Some(path) = cfg.import_from.as_ref().filter(|p| p.exists()) else {
        return Ok(None);
    };
    if st.table.is_some() {
        return Ok(None);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "gateway: cannot read the file to import");
            return Ok(None);
        }
    };
    let imp = match migrate::import_merged(&text, manifest_table, policy) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "gateway: cannot import the original admin_config.json; using the manifest's routes");
            return Ok(None);
        }
    };
    for w in &imp.warnings {
        tracing::warn!(file = %path.display(), "gateway: import: {w}");
    }
    let mut table = imp.table;
    if table.default_backend.is_empty() {
        table.default_backend = manifest_table.default_backend.clone();
    }
    tracing::info!(file = %path.display(), rules = table.rules.len(), "gateway: imported the original deployment's routes");
    st.table = Some(table);
    // Seeded "from the manifest as it is now": a later manifest edit still
    // replaces the table, as for any saved one.
    st.manifest_routes = Some(fingerprint.to_string());
    if let (Some(pw), None, None) = (&imp.password, &cfg.admin.password, &st.password_hash) {
        st.password_hash = Some(auth::hash_password(pw)?);
        tracing::info!("gateway: the original admin password was imported (stored as a hash)");
    }
    Ok(Some(path.clone()))
}

/// Move the password file of earlier versions (keyed by the stack name
/// only) to this stack's own file, if it holds this stack's password: a
/// same-named stack elsewhere may have written it. True when moved.
fn migrate_password_file(admin: &crate::manifest::Admin, hash: &str) -> bool {
    let Some(old) = &admin.legacy_password_file else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(old) else {
        return false;
    };
    let pw = text.trim_end_matches(['\r', '\n']);
    if pw.is_empty() || !auth::verify_password(hash, pw) {
        return false;
    }
    if let Err(e) = state::write_atomic(&admin.password_file, format!("{pw}\n").as_bytes()) {
        tracing::warn!(error = %e, "gateway: cannot move the admin password file");
        return false;
    }
    let _ = std::fs::remove_file(old);
    tracing::info!(from = %old.display(), to = %admin.password_file.display(), "gateway: moved the admin password file to its per-stack name");
    true
}

/// Decide the password hash at start (see the module docs) and return it.
fn settle_password(cfg: &crate::manifest::Gateway, st: &mut State) -> Result<String, GatewayError> {
    if let Some(pw) = cfg.admin.password.as_deref().filter(|p| !p.is_empty()) {
        if let Some(problem) = auth::header_problem(pw) {
            return Err(GatewayError::Password(problem));
        }
        if pw.chars().count() < auth::MIN_PASSWORD_LEN {
            tracing::warn!(
                min = auth::MIN_PASSWORD_LEN,
                "gateway: the configured admin password is short; use a longer one"
            );
        }
        let unchanged = st
            .configured_password_hash
            .as_deref()
            .is_some_and(|h| auth::verify_password(h, pw));
        if let (true, Some(current)) = (unchanged, &st.password_hash) {
            auth::check_hash(current)?;
            return Ok(current.clone());
        }
        let phc = auth::hash_password(pw)?;
        st.password_hash = Some(phc.clone());
        st.configured_password_hash = Some(phc.clone());
        return Ok(phc);
    }
    if let Some(current) = &st.password_hash {
        auth::check_hash(current)?;
        if !cfg.admin.password_file.exists() && !migrate_password_file(&cfg.admin, current) {
            tracing::info!(state_file = %cfg.state_file.display(), "gateway: the admin password was set earlier (its hash is in the state file); if it is lost, set `gateway.admin.password` to replace it");
        }
        return Ok(current.clone());
    }
    let pw = auth::generate_password();
    let phc = auth::hash_password(&pw)?;
    st.password_hash = Some(phc.clone());
    st.configured_password_hash = None;
    state::write_atomic(&cfg.admin.password_file, format!("{pw}\n").as_bytes())?;
    // Printed once, on stderr and not through the log pipeline, so it does
    // not end up in shipped logs; the file keeps it for `stackctl routes`.
    eprintln!(
        "stackctl: generated admin password (shown once): {pw}\n\
         stackctl: also written to {} (mode 0600); change it with `stackctl routes password` or set `gateway.admin.password`",
        cfg.admin.password_file.display()
    );
    tracing::info!(file = %cfg.admin.password_file.display(), "gateway: generated an admin password");
    Ok(phc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway of a manifest whose `routes:` are `routes`, its state
    /// file in `dir`.
    fn config(dir: &std::path::Path, routes: &str) -> crate::manifest::Gateway {
        let text = format!(
            "gateway:\n  state_file: {}/gateway.json\n  admin: {{ password: a-long-test-password }}\n  routes:\n{routes}",
            dir.display()
        );
        let file = dir.join("stack.yaml");
        let m = crate::manifest::load_str(&text, &file, &crate::manifest::ContainerEnv::new());
        m.unwrap().gateway.expect("a gateway")
    }

    /// Start a gateway on `cfg`; the table and fingerprint it saved.
    fn start(cfg: &crate::manifest::Gateway) -> (Table, String) {
        Gateway::new(cfg, StatusBoard::new()).expect("the gateway starts");
        let st = state::load(&cfg.state_file).unwrap().expect("a state file");
        (st.table.unwrap(), st.manifest_routes.unwrap())
    }

    const ROUTE: &str = "    - { id: a, prefix: /a/, backend: http://127.0.0.1:9000 }\n";

    /// The first start after the upgrade keeps the live (admin-edited)
    /// table although the saved fingerprint is of the older form, and
    /// rewrites the fingerprint; a real manifest change then replaces the
    /// live table, a cosmetic one does not.
    #[test]
    fn an_older_fingerprint_keeps_the_live_table_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), ROUTE);
        let live: Table = serde_json::from_value(serde_json::json!({
            "default_backend": "",
            "rules": [{"id": "live", "match": {"path_prefix": "/live/"}}],
        }))
        .unwrap();
        let old = State {
            version: 1,
            table: Some(live.clone()),
            // The form every earlier version wrote: 16 hex digits.
            manifest_routes: Some("3f1c9a7be0d24c15".into()),
            ..State::default()
        };
        state::save(&cfg.state_file, &old).unwrap();

        let (table, fp) = start(&cfg);
        assert_eq!(table, live, "the live table is kept");
        assert!(fp.starts_with(FINGERPRINT_V2), "{fp}");
        assert_eq!(start(&cfg).0, live, "and on the next start");

        // Written differently, the same routes: `priority: 0` spelled out,
        // the prefix under `match:`, keys in another order.
        let cosmetic = "    - { backend: http://127.0.0.1:9000, match: { path_prefix: /a/ }, id: a, priority: 0 }\n";
        let (table, same) = start(&config(dir.path(), cosmetic));
        assert_eq!((table, same), (live, fp.clone()));

        let changed = ROUTE.replace("9000", "9001");
        let (table, new_fp) = start(&config(dir.path(), &changed));
        assert_eq!(table.rules.len(), 1);
        assert_eq!(table.rules[0].id, "a");
        assert_eq!(
            table.rules[0].backend.as_deref(),
            Some("http://127.0.0.1:9001")
        );
        assert!(
            new_fp.starts_with(FINGERPRINT_V2) && new_fp != fp,
            "{new_fp}"
        );
    }
}
