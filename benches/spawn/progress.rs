//! Progress (stderr, only on a terminal)

use std::io::{self, IsTerminal, Write as _};
use std::time::Instant;

pub(crate) struct Progress {
    on: bool,
    start: Instant,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress { on: io::stderr().is_terminal(), start: Instant::now() }
    }

    /// Called between blocks of samples, never inside one.
    pub(crate) fn show(&self, what: std::fmt::Arguments) {
        if self.on {
            eprint!("\r\x1b[2K[{:>4.1} s] {what}", self.start.elapsed().as_secs_f64());
            let _ = io::stderr().flush();
        }
    }

    pub(crate) fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}
