//! Threads made with `clone3`/`clone` directly, without `pthread_create`,
//! that glibc and Rust's std nonetheless accept as real threads: ordinary
//! Rust code (`println!`, the allocator, `thread_local!` with `Drop`,
//! panics, `park`, `Mutex`, ...) runs on them.
//!
//! The API mirrors `std::thread`'s for making threads (`spawn`, `Builder`,
//! `JoinHandle`, `scope`): switch with one path. What acts on the current
//! thread (`current`, `park`, `sleep`, `yield_now`) stays `std::thread`'s,
//! and works on raw threads.
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
//! | `sys` (+ `asm/x86_64.s`) | kernel calls: clone3/clone and the child's first frame, the futex join, signal masks, rseq, exit, self-unmap |
//! | `region` | the stack region: one mapping with signal stack, guard, stack, start record and thread block |
//! | `glibc` | the glibc thread block: TLS, TCB, and what glibc expects of a thread at start and exit |
//! | `pool` | finished regions kept for reuse, within limits |
//! | `overflow` | the SIGSEGV handler that reports a raw thread's stack overflow |
//! | `fork` | rawthread's locks taken around `fork()`, so that a child can spawn |
//! | `lazy` | process-wide values computed on first use without ever waiting, so that `fork()` at any instant leaves a child that can spawn |
//! | `thread`, `scope` | the thread API and the life of a thread |
//! | `process` | the process API: a closure in a new process, waited for |
//! | `floor` | the kernel floor the benchmark compares against (not public API) |
//!
//! One mapping per thread holds everything a thread has: from low to high
//! addresses a guard page, the signal stack, the stack's guard, the stack,
//! the start record, the resolver state, the static TLS and the TCB. The
//! region's one diagram is beside the one function that lays it out,
//! `Plan::new` in `src/region.rs`; [`JoinHandle::layout`] and `cargo run
//! --example anatomy` show a real one.
//!
//! # The life of a thread, and who owns its region
//!
//! 1. **Creator, alone.** [`Builder::spawn`] takes a finished region from
//!    the pool (one whose tid word the kernel has cleared) or maps a new one
//!    (guard `PROT_NONE`). glibc's loader fills the static TLS from every
//!    module's image and allocates the DTV; the TCB header is written
//!    (`tcb`, `self`, `multiple_threads`, the stack and pointer guards,
//!    rseq, the resolver); malloc's per-thread state (its cache and arena)
//!    is the one the region's last thread left, or one kept from an
//!    unmapped region, or new. The start record (closure, the creator's
//!    signal mask, the name) goes above the stack. The first spawn in a
//!    process also discovers glibc's private layout once, and starts the
//!    one pthread rawthread ever makes: a probe that finds where glibc keeps
//!    a thread's stack bounds, its `strerror` buffers and malloc's state
//!    (and checks that handing that state on hands on the cache), and puts
//!    glibc in multi-threaded mode its own way. Nothing computed lazily is
//!    ever waited for, so a `fork()` at any instant leaves a child that can
//!    spawn.
//! 2. **clone.** With every signal blocked, `clone3` (or `clone`, if the
//!    kernel or a seccomp filter refuses `clone3`) starts the child with
//!    `%fs` = `tp`; the kernel writes the child's tid into the TCB's `tid`
//!    word before either side runs on. The creator restores its mask and
//!    returns a [`JoinHandle`], which owns the region from now on.
//! 3. **Child, running.** The child owns everything in the region but the
//!    tid word and the record's header. It registers rseq and its signal
//!    stack, initialises its locale, restores the creator's mask, and runs
//!    the closure under `catch_unwind`. It stores the result in the record,
//!    runs `thread_local!` destructors (`__call_tls_dtors`) and pthread-key
//!    destructors, frees what glibc's own thread exit frees (the resolver's
//!    sockets, `strerror`/`strsignal` buffers, the `dlerror` message; not
//!    malloc's state, which is handed on), blocks all signals and ends with
//!    a raw `SYS_exit`: this thread only, never the process.
//! 4. **Exit.** The kernel, done with the thread, writes 0 to the tid word
//!    and futex-wakes it (`CLONE_CHILD_CLEARTID`). Only from then is the
//!    region free: this, not the closure's return, is what `join` waits for.
//! 5. **Joiner.** [`JoinHandle::join`] watches the tid word for up to
//!    10 µs, then sleeps on it (a *shared* futex, as the kernel's wake is
//!    shared) until it reads 0: the spin saves the sleep and wake-up, the
//!    dearest part of joining a short-lived thread on a VM. It takes the
//!    result and gives the region back to the pool, which unmaps what
//!    exceeds its limits (freeing the DTV, keeping malloc's state aside).
//!
//! **Detaching.** Dropping a `JoinHandle` first leaves the region's
//! ownership in the record's header, then swaps the header's state from
//! RUNNING to DETACHED; the child, once its result is stored, swaps it to
//! DONE. Whichever swaps second learns who frees the region: a handle that
//! finds DONE gives the region to the pool itself (the pool reuses it only
//! once the tid word is 0); a child that finds DETACHED drops its own
//! result and, after its destructors, gives its region to the pool, or,
//! when the pool is full, unregisters rseq, frees its DTV, hands on malloc's
//! state and unmaps the region it runs on in assembly (`asm/x86_64.s`:
//! signals blocked, `set_tid_address(NULL)` so the kernel's exit write
//! cannot land in a reused mapping, `munmap`, `exit`).
//!
//! **Scoped threads** never detach: an unjoined [`ScopedJoinHandle`] goes to
//! its scope, and [`scope`] waits for every closure, then joins every such
//! thread (tid word 0) and drops its result before it returns, until none
//! is left (a result may hold other handles). Only a handle leaked with
//! `mem::forget` escapes the join; its result is leaked with it.
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
//! * glibc 2.35 or later on x86_64 only (tested with 2.36, 2.41 and 2.43);
//!   musl hides the state a thread needs.
//! * Linked into an executable, as Rust links crates by default. In a
//!   `cdylib`/`dylib`, Rust's thread-locals go through `__tls_get_addr`,
//!   which the overflow handler and a detached thread's last steps (after
//!   its DTV is freed) must not call.
//! * `dlclose` waits only for glibc's own threads to leave the loader's
//!   symbol lookups: do not unload a library while raw threads may still
//!   be binding its symbols.

#![warn(missing_docs)]

mod floor;
mod fork;
mod glibc;
mod lazy;
mod overflow;
mod pool;
pub mod process;
mod region;
mod scope;
mod sys;
mod thread;

#[doc(hidden)]
pub use floor::KernelFloor;
pub use pool::{PoolLimits, pool_limits, set_pool_limits};
pub use region::ThreadLayout;
pub use scope::{Scope, ScopedJoinHandle, scope};
#[doc(hidden)]
pub use sys::now_ns;
pub use sys::{THREAD_CLONE_FLAGS, uses_clone3};
pub use thread::{Builder, JoinHandle, spawn};
