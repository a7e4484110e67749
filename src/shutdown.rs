//! The one owner of `stackctl up`'s shutdown: its tokens, its deadline and
//! its tasks.
//!
//! [`Shutdown`] owns:
//!
//! - the **root** token: "everything ends now". Cancelled when the deadline
//!   passes, or by [`Shutdown::finish`]. Every phase token below is its
//!   child, so cancelling it ends every phase at once;
//! - the phase tokens, cancelled by `up` in this order:
//!   1. [`Shutdown::stop`] (the stop was asked: first SIGTERM/SIGINT, a
//!      service that gave up, a failed supervisor). The supervisor then
//!      stops the services in reverse dependency order within its share
//!      of the budget ([`Shutdown::services_budget`]);
//!   2. [`Shutdown::backups`] (a child of `stop`, so it fires with it): the
//!      periodic snapshots and the control socket end, so the final
//!      snapshot finds the repository free;
//!   3. the final snapshot runs (its sub-deadlines come from
//!      [`Shutdown::budget`]), then [`Shutdown::gateway`] is cancelled: the
//!      gateway drains, having answered (restoring page, admin API) until
//!      then;
//! - [`Shutdown::force`]: the second signal, or the deadline (it is a
//!   child of the root): every process group is SIGKILLed;
//! - ONE deadline: `shutdown_timeout` counted from the moment the stop was
//!   asked ([`Shutdown::request_stop`]), and why it was first asked
//!   ([`Shutdown::stop_reason`]: the signal's name, the panic, the service
//!   that gave up), which the supervisor logs as it begins the stop;
//! - a [`TaskTracker`] for every task `up` spawns ([`Shutdown::spawn`]), so
//!   `up` knows they all ended before it returns.
//!
//! A panic in a task `up` spawns (a bug) is a stop request like SIGTERM:
//! [`Shutdown::spawn`] catches it, logs where it happened, asks for the
//! stop and records it ([`Shutdown::panicked`]), so `up` stops the services
//! in order, takes the final backup and exits non-zero. The panic then goes
//! on to the task's `JoinHandle` as before. Where a panic happened is only
//! known to the panic hook: [`record_panic_sites`] installs one that keeps
//! it for the thread that catches the panic.
//!
//! [`Budget`] is the pure arithmetic of how the budget is spent. The
//! persistence shell reads it (and the tokens) from here; this module knows
//! nothing of persistence.
//!
//! When the deadline passes, the root is cancelled: the supervisor kills
//! every group, the gateway closes its connections, and every wait of `up`
//! bounded by [`Shutdown::bounded`] returns `None` at once. [`Shutdown::finish`]
//! waits for the tracked tasks only until the deadline too; what is still
//! running then is left to the runtime's exit (the exit code already says a
//! part did not finish). Nothing in `up` waits past the deadline.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// The shutdown of one `up` (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    root: CancellationToken,
    stop: CancellationToken,
    backups: CancellationToken,
    gateway: CancellationToken,
    force: CancellationToken,
    tasks: TaskTracker,
    total: Duration,
    /// When the stop was first asked: the deadline counts from here.
    began: Arc<OnceLock<Instant>>,
    /// The first panic caught in a task: what panicked, where.
    panic: Arc<OnceLock<String>>,
    /// Why the stop was first asked ([`Shutdown::request_stop_for`]).
    reason: Arc<OnceLock<String>>,
}

impl Shutdown {
    /// A shutdown that may take `total` (`shutdown_timeout`) once asked.
    pub fn new(total: Duration) -> Self {
        let root = CancellationToken::new();
        let stop = root.child_token();
        Shutdown {
            backups: stop.child_token(),
            gateway: root.child_token(),
            force: root.child_token(),
            stop,
            root,
            tasks: TaskTracker::new(),
            total,
            began: Arc::new(OnceLock::new()),
            panic: Arc::new(OnceLock::new()),
            reason: Arc::new(OnceLock::new()),
        }
    }

    /// Ask for the stop (idempotent): the deadline clock starts now. For a
    /// stop whose cause the log should name, [`Shutdown::request_stop_for`].
    pub fn request_stop(&self) {
        let _ = self.began.set(now());
        self.stop.cancel();
    }

    /// Ask for the stop because of `why` (`SIGTERM`, a panic, a service
    /// that gave up). Only the first request's reason is kept: a later one
    /// does not start the stop, so it does not explain it either.
    pub fn request_stop_for(&self, why: &str) {
        if !self.stop.is_cancelled() {
            let _ = self.reason.set(why.to_string());
        }
        self.request_stop();
    }

    /// Why the stop was asked, when its first request said so.
    pub fn stop_reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Kill every service now (second signal).
    pub fn force_now(&self) {
        self.request_stop_for("second signal");
        self.force.cancel();
    }

    /// Phase 1: cancelled when the stop is asked; the supervisor watches it.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Cancelled on the second signal or at the deadline.
    pub fn force(&self) -> &CancellationToken {
        &self.force
    }

    /// Phase 2: the periodic backups and the control socket.
    pub fn backups(&self) -> &CancellationToken {
        &self.backups
    }

    /// Phase 3: the gateway; cancelled by `up` after the final snapshot.
    pub fn gateway(&self) -> &CancellationToken {
        &self.gateway
    }

    /// A token that ends with everything else (the restoring page's
    /// handover, cancelled earlier by its owner).
    pub fn child(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// The supervisor's share: with persistence on, a third of the budget
    /// is kept for the final snapshot after the services stopped.
    pub fn services_budget(&self, persistence: bool) -> Duration {
        if persistence {
            self.total * 2 / 3
        } else {
            self.total
        }
    }

    /// How the budget splits, counted from the stop request (from now if
    /// it was not asked yet).
    pub fn budget(&self) -> Budget {
        Budget::new(*self.began.get_or_init(now), self.total)
    }

    /// The one deadline, once the stop was asked.
    pub fn deadline(&self) -> Option<Instant> {
        self.began.get().map(|&b| Budget::new(b, self.total).end())
    }

    /// Resolves when the deadline has passed (never before the stop is
    /// asked), or when the root was cancelled.
    pub async fn expired(&self) {
        let timer = async {
            self.stop.cancelled().await;
            if let Some(d) = self.deadline() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
            }
        };
        tokio::select! {
            () = self.root.cancelled() => {}
            () = timer => self.root.cancel(),
        }
    }

    /// `fut`, or `None` if the deadline passes first.
    pub async fn bounded<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            out = fut => Some(out),
            () = self.expired() => None,
        }
    }

    /// Spawn a task `up` waits for in [`Shutdown::finish`]. If it panics
    /// (`what` names it in the log), the stop is asked as by SIGTERM
    /// ([`Shutdown::caught_panic`]); its `JoinHandle` still sees the panic.
    pub fn spawn<F>(&self, what: &'static str, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let me = self.clone();
        self.tasks.spawn(async move {
            match catch_panic(fut).await {
                Ok(out) => out,
                Err(payload) => {
                    me.caught_panic(what, payload.as_ref());
                    std::panic::resume_unwind(payload)
                }
            }
        })
    }

    /// A panic in `what` was caught (a bug): log where it happened, record
    /// it for the exit code, and ask for the stop, as SIGTERM does.
    pub fn caught_panic(&self, what: &str, payload: &(dyn Any + Send)) {
        self.panicked_at(format!("{what} panicked at {}", describe_panic(payload)));
    }

    /// [`Shutdown::caught_panic`] for a panic already described (`<what>
    /// panicked at FILE:LINE:COL: message`), e.g. by the thread it
    /// happened on, which alone knows where ([`describe_panic`]).
    pub fn panicked_at(&self, panic: String) {
        tracing::error!(
            "{panic} (a bug, please report it); stopping as on SIGTERM: the services in reverse dependency order, then the final backup"
        );
        self.request_stop_for(&format!("panic: {panic}"));
        let _ = self.panic.set(panic);
    }

    /// The first panic caught ([`Shutdown::caught_panic`]): what and where.
    pub fn panicked(&self) -> Option<&str> {
        self.panic.get().map(String::as_str)
    }

    /// Cancel the root once the deadline passes, so every phase ends even
    /// if no one is waiting on [`Shutdown::expired`] then.
    /// Not tracked: it ends with the root, which [`Shutdown::finish`]
    /// cancels last.
    pub fn watch_deadline(&self) {
        let me = self.clone();
        tokio::spawn(async move { me.expired().await });
    }

    /// The end: cancel every phase, then wait for the tracked tasks until
    /// the deadline. `false` if some were still running then.
    pub async fn finish(&self) -> bool {
        self.request_stop();
        self.tasks.close();
        let all = self.bounded(self.tasks.wait()).await.is_some();
        self.root.cancel();
        if !all {
            tracing::warn!(
                left = self.tasks.len(),
                "some tasks did not end within `shutdown_timeout`; leaving them behind"
            );
        }
        all
    }
}

/// `fut`'s output, or the payload of a panic while it was polled. Unwind
/// safety is asserted: what a caller shares with `fut` (the supervisor's
/// state) is what it must still act on after the panic, as well as it can.
pub async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await
}

thread_local! {
    /// Where the last panic on this thread happened (see [`record_panic_sites`]).
    static PANIC_SITE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install (once) a panic hook that keeps where each panic happened for
/// [`describe_panic`], then does what the previous hook did (the
/// `thread '…' panicked at …` line on stderr). A caught panic's payload
/// carries only the message: the location is known to the hook alone. The
/// catch runs on the panicking thread, so a thread-local pairs them even
/// when two threads panic at once.
pub fn record_panic_sites() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let site = info.location().map(|l| l.to_string());
            PANIC_SITE.with(|s| *s.borrow_mut() = site);
            previous(info);
        }));
    });
}

/// `FILE:LINE:COL: message` of a panic just caught on this thread.
pub fn describe_panic(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let site = PANIC_SITE.with(|s| s.borrow_mut().take());
    let site = site.as_deref().unwrap_or("an unknown location");
    format!("{site}: {message}")
}

/// `now` from tokio's clock when a runtime runs (tests may pause it).
fn now() -> Instant {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::Instant::now().into_std(),
        Err(_) => Instant::now(),
    }
}

/// How `up` spends `shutdown_timeout`, counted from the stop request: the
/// services get two thirds (the supervisor's share), the final backup runs
/// until [`Budget::final_backup`], its network steps until
/// [`Budget::network`] (a little earlier, so their own error, naming the
/// remote, arrives before the backup is abandoned), and what is left goes
/// to the gateway drain and the runtime's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    began: Instant,
    total: Duration,
}

impl Budget {
    /// `total` from `began`.
    pub fn new(began: Instant, total: Duration) -> Self {
        Budget { began, total }
    }

    /// When the process must be gone: 150 ms before the budget's end, the
    /// runtime's 100 ms shutdown timeout (`up.rs`) plus 50 ms for the exit
    /// itself.
    pub fn end(&self) -> Instant {
        self.began + self.total.saturating_sub(Duration::from_millis(150))
    }

    /// When the final backup is abandoned: a tenth of the budget (at most
    /// half a second) before the end, for the gateway to close.
    pub fn final_backup(&self) -> Instant {
        let reserve = (self.total / 10).min(Duration::from_millis(500));
        self.end()
            .checked_sub(reserve)
            .unwrap_or(self.began)
            .max(self.began)
    }

    /// When the final backup's network steps give up.
    pub fn network(&self) -> Instant {
        let margin = (self.total / 20).min(Duration::from_millis(250));
        self.final_backup()
            .checked_sub(margin)
            .unwrap_or(self.began)
            .max(self.began)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // These tests pause tokio's clock: it jumps to the next timer when
    // every task waits, so a budget costs no real time and where a wait
    // ends is exact.
    #[tokio::test(start_paused = true)]
    async fn nothing_expires_before_the_stop_is_asked() {
        let s = Shutdown::new(ms(200));
        assert_eq!(s.deadline(), None);
        let r = tokio::time::timeout(ms(3_600_000), s.expired()).await;
        assert!(r.is_err(), "expired without a stop request");
        assert!(!s.stop().is_cancelled() && !s.gateway().is_cancelled());
    }

    #[tokio::test]
    async fn phase_tokens_fire_in_their_order() {
        let s = Shutdown::new(ms(1_000));
        s.request_stop();
        assert!(s.stop().is_cancelled() && s.backups().is_cancelled());
        // The gateway and `force` outlive the stop request.
        assert!(!s.gateway().is_cancelled() && !s.force().is_cancelled());
        s.force_now();
        assert!(s.force().is_cancelled() && !s.gateway().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_phase_cannot_hold_up_past_the_deadline() {
        let s = Shutdown::new(ms(300));
        s.watch_deadline();
        // A task that never ends by itself, and one that ends when its
        // phase token fires.
        s.spawn("stuck", std::future::pending::<()>());
        let gw = s.gateway().clone();
        s.spawn("gateway", async move { gw.cancelled().await });
        let t0 = tokio::time::Instant::now();
        s.request_stop();
        let stuck = s.bounded(std::future::pending::<()>()).await;
        assert_eq!(stuck, None);
        // Ended exactly at the deadline, which lies within the budget.
        let at_deadline = || Some(tokio::time::Instant::now().into_std()) == s.deadline();
        assert!(at_deadline(), "bounded did not end at the deadline");
        let took = t0.elapsed();
        assert!(took > Duration::ZERO && took <= ms(300), "took {took:?}");
        assert!(!s.finish().await, "the stuck task was reported as ended");
        assert!(at_deadline(), "finish waited past the deadline");
        // The deadline ended every phase.
        assert!(s.gateway().is_cancelled() && s.force().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn finish_returns_at_once_when_every_task_ended() {
        let s = Shutdown::new(ms(5_000));
        s.watch_deadline();
        let gw = s.gateway().clone();
        s.spawn("gateway", async move { gw.cancelled().await });
        s.request_stop();
        s.gateway().cancel();
        let t0 = tokio::time::Instant::now();
        assert!(s.finish().await);
        assert_eq!(t0.elapsed(), Duration::ZERO, "finish waited on a timer");
    }

    #[test]
    fn the_budget_leaves_the_final_backup_before_the_end() {
        let t0 = Instant::now();
        let table = [
            // (total, end, final backup, network) after t0
            (ms(9_000), ms(8_850), ms(8_350), ms(8_100)),
            (ms(3_000), ms(2_850), ms(2_550), ms(2_400)),
            (ms(100), ms(0), ms(0), ms(0)),
        ];
        for (total, end, fin, net) in table {
            let b = Budget::new(t0, total);
            assert_eq!(b.end(), t0 + end, "{total:?}");
            assert_eq!(b.final_backup(), t0 + fin, "{total:?}");
            assert_eq!(b.network(), t0 + net, "{total:?}");
        }
    }

    #[tokio::test]
    async fn a_panicking_task_asks_for_the_stop_and_says_where() {
        record_panic_sites();
        let s = Shutdown::new(ms(1_000));
        let boom = s.spawn("the test task", async {
            if s_is_doomed() {
                panic!("boom");
            }
        });
        let err = boom.await.expect_err("the panic reaches the JoinHandle");
        assert!(err.is_panic());
        // Asked as SIGTERM asks: the deadline clock runs.
        assert!(s.stop().is_cancelled() && s.deadline().is_some());
        let p = s.panicked().unwrap_or_default();
        assert!(
            p.starts_with("the test task panicked at src/shutdown.rs:") && p.ends_with(": boom"),
            "{p}"
        );
        assert_eq!(s.stop_reason(), Some(format!("panic: {p}").as_str()));
    }

    #[test]
    fn the_first_stop_request_names_the_reason() {
        let s = Shutdown::new(ms(1_000));
        assert_eq!(s.stop_reason(), None);
        s.request_stop_for("SIGTERM");
        s.request_stop_for("service `web` gave up");
        s.force_now();
        assert_eq!(s.stop_reason(), Some("SIGTERM"));
        // A request without a reason does not make up one, nor does a
        // reason given after it take its place.
        let s = Shutdown::new(ms(1_000));
        s.request_stop();
        s.request_stop_for("SIGINT");
        assert_eq!(s.stop_reason(), None);
    }

    /// Opaque to the compiler, so the panic above is not dead code to it.
    fn s_is_doomed() -> bool {
        std::hint::black_box(true)
    }
}
