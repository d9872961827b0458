//! Threads made with `clone3`/`clone` directly, without `pthread_create`,
//! that glibc and Rust's std nonetheless accept as real threads: ordinary
//! Rust code (`println!`, the allocator, `thread_local!` with `Drop`,
//! panics, `park`, `Mutex`, ...) runs on them.
//!
//! The API is `std::thread`'s: switch with one path (`use rawthread as
//! thread;`). What makes a thread (`spawn`, `Builder`, `JoinHandle`,
//! `scope`, `Scope`, `ScopedJoinHandle`) is rawthread's own; the rest of
//! `std::thread` (`current`, `park`, `sleep`, `yield_now`,
//! `available_parallelism`, `Thread`, `ThreadId`, `LocalKey`, `Result`, ...)
//! is re-exported from std, and works on raw threads.
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
//! | `sys` (+ `asm/x86_64.s`) | kernel calls, each with its errno: raw clone3/clone and the child's first frame, futexes, signal masks, rseq, exit, self-unmap |
//! | `clone` | the clone flags of a thread, one comment each, and `clone3` with its fallback to `clone` |
//! | `region` | the region: its layout (`Plan`, with the diagram) and its mapping |
//! | `glibc/` | the glibc thread block: discovering glibc's layout (`layout`), the probe pthread (`probe`), the twin census of that pthread and raw threads (`census`), building and renewing a block (`block`), a thread's first and last steps (`duties`), glibc's thread list, which raw threads join (`lists`), malloc's state handed on (`handover`) |
//! | `life` | the life of one thread: start record, child entry and exit, who frees the region (the ownership essay) |
//! | `name` | the thread's name in std's `Thread`: where the running std keeps it, proven at the first named spawn |
//! | `join` | waiting for a thread's tid word to clear (and why without a spin) |
//! | `pool` | finished regions kept for reuse, within limits |
//! | `overflow` | the SIGSEGV handler that reports a raw thread's stack overflow |
//! | `fork` | rawthread's locks taken around `fork()`, so that a child can spawn |
//! | `lazy` | process-wide values computed on first use without ever waiting, so that `fork()` at any instant leaves a child that can spawn |
//! | `thread` | the thread API: `Builder`, `spawn`, `JoinHandle` |
//! | `scope` | the scoped-thread API: `scope`, `Scope`, `ScopedJoinHandle` |
//! | `process` | the process API: a closure in a new process, waited for |
//! | `bench` | the benchmark's fixtures, with the `bench` feature only: the kernel floor and the clock |
//!
//! One mapping per thread holds everything a thread has: from low to high
//! addresses a guard page, the signal stack, the stack's guard, the stack,
//! the start record, the resolver state, the static TLS and the TCB. The
//! region's one diagram is beside the one function that lays it out,
//! `Plan::new` in `src/region.rs`; [`JoinHandle::layout`] and `cargo run
//! --example anatomy` show a real one.
//!
//! # The life of a thread
//!
//! Who owns a thread's region at each moment, from the creator's call to
//! the joiner's return, is told in `src/life.rs`, beside the code.
//!
//! # Known limits
//!
//! The same list as the README's.
//!
//! * **glibc 2.35 or later on x86_64 only** (tested with 2.36, 2.41 and 2.43 by
//!   `.ci/glibc-matrix`). The build fails with a clear message on any
//!   other target; musl hides the state a thread needs.
//! * `pthread_join`, `pthread_detach` and `pthread_cancel` on a raw thread,
//!   and `pthread_exit` in one, must not be used: glibc unwinds a cancelled or
//!   exiting thread to a frame of its own `start_thread`, which raw threads do
//!   not have. The rest of what glibc offers for a thread works on raw threads
//!   as on a pthread: `pthread_getattr_np` (stack, guard, scheduling),
//!   `pthread_getschedparam`, `pthread_setschedparam`, `pthread_setschedprio`,
//!   `pthread_getcpuclockid`, `pthread_kill`, robust and priority-protect
//!   mutexes, and `pthread_exit` in `main` (the process then lives until its
//!   last thread, raw or not, returns). `std::thread::current()` works on them,
//!   with the builder's name where rawthread could prove where the running std
//!   keeps a `Thread`'s name (std 1.88 to 1.95 and a 1.97 nightly tested), and
//!   without one where it could not.
//! * malloc's per-thread state, and on glibc 2.41 and later `getrandom()`'s
//!   vDSO state, are handed on to the next thread, not freed: the process
//!   keeps one of each per thread that was ever alive *at the same time* as
//!   the others (glibc's own threads give theirs back at exit, in clean-ups it
//!   does not export). Everything else glibc frees at a thread's exit
//!   (`strerror` and `strsignal` buffers, the `dlerror()` message, the
//!   resolver's sockets, the priority-protect buffer) raw threads free too;
//!   the legacy Sun RPC state of libc's compatibility symbols, which no
//!   program built today can reach, is not freed.
//! * The first spawn's twin census (a pthread and raw threads compared on
//!   the running glibc) sees what its battery does and nothing else: a duty
//!   that a call outside the battery gives a thread, state kept in other libraries
//!   or behind a pointer, counts that a call (not a thread's creation)
//!   raises, and the paths of options it does not take (affinity, signal
//!   masks, names: their own tests guard them).
//! * rawthread is meant to be linked into an executable, as Rust links crates
//!   by default. In a `cdylib`/`dylib`, Rust's thread-locals go through
//!   `__tls_get_addr`, which the overflow handler and a detached thread's
//!   last steps (after its DTV is freed) must not call.
//! * A `rawthread::process` child is a copy of the calling thread alone, made
//!   by a bare `clone3`: unlike `fork()`, glibc's `pthread_atfork` handlers do
//!   not run and its locks are not reset, so in a multi-threaded parent the
//!   child should keep to async-signal-safe calls.

#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
mod clone;
mod fork;
mod glibc;
mod join;
mod lazy;
mod life;
mod name;
mod overflow;
mod pool;
pub mod process;
mod region;
mod scope;
mod sys;
mod thread;

pub use clone::{PROCESS_CLONE_FLAGS, THREAD_CLONE_FLAGS, uses_clone3};
pub use pool::{PoolLimits, pool_limits, set_pool_limits};
pub use region::ThreadLayout;
pub use scope::{Scope, ScopedJoinHandle, scope};
pub use thread::{Builder, JoinHandle, Scheduling, spawn};

// The rest of `std::thread`, so that `use rawthread as thread;` is the
// whole switch: what acts on the current thread, and the types, are std's
// own, and are right on raw threads too.
pub use std::thread::{
    AccessError, LocalKey, Result, Thread, ThreadId, available_parallelism, current, panicking, park, park_timeout,
    sleep, yield_now,
};
#[allow(deprecated)]
pub use std::thread::{park_timeout_ms, sleep_ms};
