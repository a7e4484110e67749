//! The progress a local `backup` or `restore` shows while the persister
//! works: bars on a terminal, plain lines in a log. The same view shows a
//! restore that the running `up` does for `stackctl restore`, from the
//! progress it streams over the control socket ([`ProgressView::apply`]).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::persist::lifecycle::Event;
use crate::persist::progress::{self, Lines, ProgressSink, Reading};
use crate::persist::Progress;

/// Shows a restore or a backup: on a terminal, a bar for the stage (files
/// restored, objects fetched) and, while large files move, one for the
/// current file (bytes, rate, ETA) and one for the bytes of all of them;
/// otherwise plain lines on stderr at most every [`progress::interval`]
/// (an operation shorter than that prints nothing; logs stay readable).
pub(super) struct ProgressView {
    mode: Mode,
    /// When the last plain stage line was printed (or the view was made).
    last: Mutex<Instant>,
    every: Duration,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        stage: ProgressBar,
        /// The file and total bars of the transfer under way, and the file
        /// number the file bar shows.
        bytes: Mutex<Option<ByteBars>>,
    },
    Plain(Lines),
}

struct ByteBars {
    file: ProgressBar,
    total: ProgressBar,
    index: usize,
}

/// A bar in `style`, or the default look if the (fixed) template were
/// refused: a bad template would only cost the looks.
fn styled(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl ProgressView {
    pub(super) fn new() -> Arc<Self> {
        let every = progress::interval();
        let mode = if std::io::stdout().is_terminal() {
            let multi = MultiProgress::new();
            let stage = multi.add(styled(0, "{bar:30.cyan/blue} {msg}"));
            Mode::Bars {
                multi,
                stage,
                bytes: Mutex::new(None),
            }
        } else {
            Mode::Plain(Lines::stderr(every))
        };
        Arc::new(Self {
            mode,
            last: Mutex::new(Instant::now()),
            every,
        })
    }

    pub(super) fn show(&self, p: Progress) {
        match &self.mode {
            Mode::Bars { stage, .. } => {
                stage.set_length(p.total);
                stage.set_position(p.done);
                stage.set_message(p.to_string());
            }
            Mode::Plain(_) => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= self.every {
                    *last = Instant::now();
                    eprintln!("{p}");
                }
            }
        }
    }
}

impl ProgressView {
    /// The work moved on to another step (`stopping web`): a line of its
    /// own as `op: step`, at once (steps are few, and each may last long),
    /// or the stage bar's text.
    pub(super) fn step(&self, op: &str, step: &str) {
        match &self.mode {
            Mode::Bars { stage, .. } => {
                stage.set_length(0);
                stage.set_position(0);
                stage.set_message(format!("{op}: {step}"));
            }
            Mode::Plain(_) => eprintln!("{op}: {step}"),
        }
    }

    /// Show what the running `up` reported of `op` (see [`crate::control`]).
    pub(super) fn apply(&self, op: &str, e: Event) {
        match e {
            Event::Step(text) => self.step(op, &text),
            Event::Stage(p) => self.show(p),
            Event::Bytes(r) => self.update(&r),
            Event::BytesEnd(r) => self.finish(&r),
        }
    }
}

impl ProgressSink for ProgressView {
    fn update(&self, r: &Reading) {
        let (multi, bytes) = match &self.mode {
            Mode::Plain(lines) => return lines.update(r),
            // No file has started yet: nothing worth a bar.
            Mode::Bars { .. } if r.index == 0 => return,
            Mode::Bars { multi, bytes, .. } => (multi, bytes),
        };
        let mut bytes = bytes.lock().unwrap_or_else(|e| e.into_inner());
        let bars = bytes.get_or_insert_with(|| ByteBars {
            file: multi.add(styled(
                0,
                "{bar:30.green/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )),
            total: multi.add(styled(
                r.total,
                "{bar:30.green/blue} {bytes}/{total_bytes} ({percent}%) ETA {eta} {msg}",
            )),
            index: 0,
        });
        if bars.index != r.index {
            // A new file: its own rate and ETA from zero.
            bars.index = r.index;
            bars.file.reset();
            bars.file.set_length(r.file_size);
            let name = r.file.as_ref().map(|f| f.display().to_string());
            bars.file.set_message(name.unwrap_or_default());
            bars.total.set_message(if r.count > 1 {
                format!("{} total, file {} of {}", r.label, r.index, r.count)
            } else {
                format!("{} total", r.label)
            });
        }
        bars.file.set_position(r.file_done);
        bars.total.set_length(r.total);
        bars.total.set_position(r.done);
    }

    fn finish(&self, r: &Reading) {
        match &self.mode {
            Mode::Plain(lines) => lines.finish(r),
            Mode::Bars { multi, bytes, .. } => {
                let taken = bytes.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(bars) = taken {
                    for bar in [bars.file, bars.total] {
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
            }
        }
    }

    fn tick(&self) -> Duration {
        match &self.mode {
            Mode::Plain(lines) => lines.tick(),
            // Often enough for a smooth bar and rate.
            Mode::Bars { .. } => Duration::from_millis(100),
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        if let Mode::Bars { stage, .. } = &self.mode {
            stage.finish_and_clear();
        }
    }
}
