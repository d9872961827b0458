//! The glibc thread block: what a thread that `pthread_create` did not make
//! needs so that glibc, and the Rust std built on it, take it for one of
//! their own.
//!
//! On x86_64 glibc the TCB *is* `struct pthread`; it starts at the thread
//! pointer `tp` (the `%fs` base), and the static TLS blocks of all modules
//! loaded at start-up sit just below it (TLS variant II), the main
//! executable's nearest to `tp`, libc's among them. Where the block lies in
//! the region is `Plan::new`'s (`src/region.rs`) to say; the sizes are this
//! module's ([`Glibc::geometry`]).
//!
//! Nothing here is public glibc API. Every private symbol and offset is
//! looked up once with `dlsym` (the offsets from the descriptors glibc
//! exports for libthread_db) and checked against the calling thread, which
//! glibc made, before the first raw thread exists. A missing symbol or a
//! failed check is an error from the first spawn, never a crash.
//!
//! A few facts only a thread glibc made shows (where `struct pthread` keeps
//! the stack bounds and the `strerror` buffers, which words of libc's TLS
//! are malloc's) are found once by [`probe`], in the one pthread rawthread
//! makes, and checked there: malloc's state by handing it from one cache to
//! another and back. The comments below say why each step exists.
//!
//! | file | its one job |
//! |---|---|
//! | `layout` | discovering and checking glibc's private layout |
//! | `probe` | the one pthread, which finds what only a glibc thread shows |
//! | `block` | building, renewing and freeing a region's thread block |
//! | `duties` | a raw thread's first and last steps |
//! | `lists` | glibc's thread list, which raw threads join and leave |
//! | `handover` | malloc's per-thread state, handed from thread to thread |

mod block;
mod duties;
mod handover;
mod layout;
mod lists;
mod probe;

pub(crate) use block::Block;
pub(crate) use duties::{count, enter, leave, reset_in_process_child, uncount};
pub(crate) use handover::{Legacy, legacies};
pub(crate) use layout::{Glibc, current_tp};
#[cfg(feature = "bench")]
pub(crate) use lists::list;
pub(crate) use lists::unlist;

use std::io;

use crate::lazy::LazyBox;

/// The discovered glibc, or why it cannot be used. Until a call succeeds,
/// each call discovers and checks glibc's private layout (an error there
/// is `Unsupported`: this glibc lacks what rawthread needs, and will on
/// every call) and runs [`probe`], whose errors (EAGAIN at a thread limit)
/// are the kernel's and may pass. Threads racing here each probe, and
/// the first to finish publishes (see [`crate::lazy`]).
pub(crate) fn get() -> io::Result<&'static Glibc> {
    static GLIBC: LazyBox<Glibc> = LazyBox::new();
    if let Some(glibc) = GLIBC.get() {
        return Ok(glibc);
    }
    let mut glibc = layout::discover().map_err(layout::unsupported)?;
    glibc.probed = probe::probe(&glibc)?;
    Ok(GLIBC.publish(glibc).0)
}
