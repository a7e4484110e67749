//! Stopping and starting named services from outside the supervisor, while
//! the rest of the stack keeps running (a restore through the admin API
//! stops the services that use the restored paths, then starts them again).
//!
//! A stopped service is *held*: its restart policy does not bring it back
//! and it does not count as a failed run; it waits (phase `waiting`) until
//! [`Control::start`] releases it. The services of one [`Control::stop`]
//! stop in reverse dependency order among themselves; a dependent outside
//! the set is not stopped and not waited for.

use tokio::sync::{mpsc, oneshot};

/// A request to the supervisor's event loop.
#[derive(Debug)]
pub enum Command {
    /// Hold these services; answer once none of them runs any more, with
    /// the names that were running, starting or waiting to restart (the
    /// ones to start again).
    Stop {
        /// Service names.
        names: Vec<String>,
        /// The held services (names, manifest order).
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Release these services: each starts again as soon as its
    /// dependencies allow. Answers with the names that were held.
    Start {
        /// Service names.
        names: Vec<String>,
        /// The released services (names, manifest order).
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// The receiving end, given to [`super::run()`].
pub type Commands = mpsc::UnboundedReceiver<Command>;

/// The handle others keep to stop and start services.
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Command>,
}

/// A handle and the receiver for the supervisor.
pub fn channel() -> (Control, Commands) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Control { tx }, rx)
}

/// The supervisor is gone (the stack is stopping).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the supervisor is not running (the stack is stopping)")]
pub struct Gone;

impl Control {
    /// Stop `names` (unknown names and services that are not running are
    /// skipped) and wait until every one of them has exited. Returns the
    /// services it holds: pass them to [`Control::start`] afterwards.
    pub async fn stop(&self, names: Vec<String>) -> Result<Vec<String>, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stop { names, reply })
            .map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Release services held by [`Control::stop`]; they start again as
    /// their dependencies allow. Returns the ones that were held.
    pub async fn start(&self, names: Vec<String>) -> Result<Vec<String>, Gone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Start { names, reply })
            .map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }
}
