//! Threads made with `clone3`/`clone` directly, without `pthread_create`,
//! that glibc and Rust's std nonetheless accept as real threads: ordinary
//! Rust code (`println!`, the allocator, `thread_local!` with `Drop`,
//! panics, `park`, `Mutex`, ...) runs on them.
//!
//! The API mirrors `std::thread`: switch with one path.
//!
//! ```
//! let handle = rawthread::spawn(|| 6 * 7);
//! assert_eq!(handle.join().unwrap(), 42);
//!
//! let mut data = vec![1, 2, 3];
//! rawthread::scope(|s| {
//!     s.spawn(|| data.push(4));
//! });
//! assert_eq!(data, [1, 2, 3, 4]);
//! ```
//!
//! Linux x86_64 with glibc only (the build refuses anything else).
//!
//! # How a thread is made
//!
//! The source reads as the architecture:
//!
//! | module | its one job |
//! |---|---|
//! | `sys` (+ `asm/x86_64.s`) | kernel calls: clone3/clone and the child's first frame, futex, signal masks, rseq, exit |
//! | `region` | the stack region: one mapping with guard, stack, start record and thread block |
//! | `glibc` | the glibc thread block: TLS, TCB, and what glibc expects of a thread at start and exit |
//! | `thread`, `scope` | the thread API and the life of a thread |
//!
//! One mapping per thread, from low to high addresses:
//!
//! ```text
//!  +-----------+----------------------------+--------------+-----------+------------+------------------+
//!  |   guard   |  stack        <- grows down | start record | res_state | static TLS | TCB              |
//!  | PROT_NONE |                            | (closure in, |           | (every     | (struct pthread: |
//!  | 1 page    |  2 MiB by default          |  result out) |           |  module)   |  ... tid ...)    |
//!  +-----------+----------------------------+--------------+-----------+------------+------------------+
//!              ^ stack_low        stack_top ^                                        ^ tp = %fs base
//!                                                                      the tid word: TCB + 720 (glibc 2.36)
//! ```
//!
//! The life of a thread, and who owns the region at each step:
//!
//! 1. **Creator, alone.** [`Builder::spawn`] maps the region (guard
//!    `PROT_NONE`), lets glibc's loader fill the static TLS from every
//!    module's image and allocate the DTV, fills the TCB header (`tcb`,
//!    `self`, `multiple_threads`, the stack and pointer guards), and writes
//!    the start record (the closure, the creator's signal mask, the name)
//!    above the stack. The first spawn in a process also discovers glibc's
//!    private layout once and puts glibc in multi-threaded mode.
//! 2. **clone.** With every signal blocked, `clone3` (or `clone`, if the
//!    kernel or a seccomp filter refuses `clone3`) starts the child with
//!    `%fs` = `tp`; the kernel writes the child's tid into the TCB's `tid`
//!    word before either side runs on. The creator restores its mask and
//!    returns a [`JoinHandle`], which now owns the region.
//! 3. **Child, running.** The child owns everything in the region but the
//!    tid word. It registers rseq, initialises its locale, restores the
//!    creator's mask, and runs the closure under `catch_unwind`; it stores
//!    the result in the record, runs `thread_local!` destructors
//!    (`__call_tls_dtors`) and pthread-key destructors, blocks all signals
//!    and ends with a raw `SYS_exit`: only this thread, never the process.
//! 4. **Exit.** The kernel, done with the thread, writes 0 to the tid word
//!    and futex-wakes it (`CLONE_CHILD_CLEARTID`). Only from then is the
//!    region free: this, not the closure's return, is what `join` waits for.
//! 5. **Joiner.** [`JoinHandle::join`] sleeps on the tid word (a *shared*
//!    futex, as the kernel's wake is shared) until it reads 0, takes the
//!    result, lets glibc free the DTV and dynamic TLS, and unmaps the
//!    region. A handle dropped before that hands the region to an orphan
//!    list instead; a later spawn frees it once its tid word reads 0.
//!
//! # Known limits
//!
//! * `setuid()`/`setgid()` and friends change credentials only in glibc's
//!   own threads: Linux credentials are per thread, and glibc signals only
//!   the threads on its lists. A raw thread keeps its old credentials.
//! * A library `dlopen`ed while a raw thread runs, if it uses initial-exec
//!   TLS, reads zeroed TLS in that thread (glibc initialises it only in the
//!   threads on its lists).
//! * `pthread_exit`, `pthread_cancel`, `pthread_join`, `pthread_detach`,
//!   `pthread_getattr_np` and robust mutexes must not be used on a raw
//!   thread. `std::thread::current()` works but reports no name.
//! * glibc on x86_64 only (tested with 2.36); musl hides the state a
//!   thread needs.

mod floor;
mod glibc;
mod overflow;
mod pool;
pub mod process;
mod region;
mod scope;
mod sys;
mod thread;

#[doc(hidden)]
pub use floor::{KernelFloor, now_ns};
pub use pool::{PoolLimits, pool_limits, set_pool_limits};
pub use region::ThreadLayout;
pub use scope::{Scope, ScopedJoinHandle, scope};
pub use sys::{THREAD_CLONE_FLAGS, uses_clone3};
pub use thread::{Builder, JoinHandle, spawn};
