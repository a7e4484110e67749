//! One connection to a backend, and the check that an idle one is quiet.

use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::gateway::deadline::Deadline;
use crate::gateway::fanout::Permit;

/// One connection to a backend, with bytes read but not yet used.
#[derive(Debug)]
pub struct Conn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
    /// The response timeout, kept with the connection and moved for each
    /// request (see [`Deadline`]).
    pub(super) timer: Option<Deadline>,
    /// Its place under the backend's connection cap, given back when the
    /// connection is dropped (`None`: no cap).
    pub(super) permit: Option<Permit>,
}

impl Conn {
    /// Whether the backend has sent nothing since the connection went
    /// idle: not a byte, not a close. Asks the kernel (one `recv` with
    /// `MSG_PEEK`), not tokio's readiness, which lags until the runtime
    /// next polls for events.
    pub(super) fn silent(&self) -> bool {
        let mut probe = [0u8; 1];
        // SAFETY: `recv` writes at most 1 byte into `probe`, which lives
        // across the call; the descriptor is owned by `self.io` and open.
        let n = unsafe {
            libc::recv(
                self.io.as_raw_fd(),
                probe.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

/// Whether an idle connection is still quiet; if so, `cx` is woken when
/// anything arrives on it. tokio's readiness can say "readable" after a
/// read that happened to empty the socket exactly: a read then tells, and
/// clears it.
pub(super) fn quiet(io: &TcpStream, cx: &mut Context<'_>) -> bool {
    // A stale "readable" is cleared by the first read; a second one means
    // the backend did send something meanwhile.
    for _ in 0..2 {
        match io.poll_read_ready(cx) {
            Poll::Pending => return true,
            Poll::Ready(Err(_)) => return false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                match io.try_read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A byte (an answer to no request), EOF, or an error.
                    _ => return false,
                }
            }
        }
    }
    false
}
