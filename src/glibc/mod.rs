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
//! | `census` | the twin census: the probe's pthread and raw threads, held against each other at the first spawn |
//! | `handover` | what glibc frees only in its own thread exit (malloc's and `getrandom`'s state), handed from thread to thread |
//!
//! # glibc's per-thread duties
//!
//! Everything glibc does for one of its threads, from `pthread_create`
//! (`allocate_stack`, `get_cached_stack`), `start_thread`,
//! `__libc_thread_freeres`, `__nptl_free_tcb`/`__nptl_deallocate_stack` and
//! `pthread_exit` (glibc 2.35 to 2.43), and what rawthread does instead. To
//! check rawthread against a new glibc release, read those functions and
//! `struct pthread` (`nptl/descr.h`) against this table: a new field that
//! a thread's creation, start or exit writes is a new row.
//!
//! The last column names the rule of the twin census (`census.rs`: the
//! probe's pthread and raw threads compared on the running glibc at the
//! first spawn) that catches the duty's absence: **C** the blocks agree at
//! creation, entry and end, **K** the kernel holds the same registrations
//! for both, **X** every word a pthread's exit changes also changes for the
//! raw thread, **P** no pointer the thread's calls made survives its exit
//! unless handed on on purpose, **G** libc's counts that move with a
//! pthread's life move with a raw thread's; **R** what `pthread_getattr_np`
//! reports of a raw thread is its region. "Refused" says where the census
//! was shown to refuse rawthread with that duty removed (glibc 2.36, 2.41,
//! 2.43; where a duty applies to fewer, those; `.ci/census-mutants`
//! removes each in turn and runs a first spawn on each glibc); "excused" that the census
//! passes over the word on purpose, found by a descriptor or the probe.
//!
//! | duty (glibc) | where rawthread does it | test | census |
//! |---|---|---|---|
//! | static TLS from every module's image, a DTV (`_dl_allocate_tls`) | `block.rs` `list_then_allocate_tls` | `std_compat.rs` `thread_local_starts_fresh_in_each_thread` | C |
//! | TCB header: `tcb`, `self`, `multiple_threads`, stack and pointer guards, `feature_1` | `block.rs` `write_header` | `std_compat.rs` (all of it runs on them) | C |
//! | `specific[0]` = the in-TCB key block | `write_header` | `std_compat.rs` `pthread_key_destructors_run_at_exit` | C |
//! | `stackblock`, `stackblock_size`, `guardsize`, `reported_guardsize` | `write_header` (from the guard's start) | `api.rs` `pthread_getattr_np_reports_the_stack`, `small_stacks_take_glibcs_big_formats`; `glibc_duties.rs` `getattr_reports_the_guard` | R (refused without the guard size); C excused: each thread's own stack |
//! | robust list: `robust_head` empty, `robust_prev`, `futex_offset` | `write_header` | `glibc_duties.rs` `robust_mutexes_in_raw_threads` | C (refused) |
//! | `set_robust_list` at start | `duties.rs` `enter` | the same | K (refused) |
//! | rseq area cleared, `cpu_id` "not yet", registered at start | `write_header`; `enter` | `glibc_duties.rs` `rseq_area_starts_clean_on_a_reused_region`; `std_compat.rs` `rseq_registered_when_glibc_registers_it` | C on a reused region (refused, 2.41 and 2.43, also where the first spawn's stack is beyond what the pool keeps; inside `struct pthread` before), K; the fields the kernel writes excused |
//! | `flags` (attribute flags; the creator's recorded scheduling; `DO_RSEQ`) | `write_header`; `Block::record_scheduling` | `glibc_duties.rs` `getattr_reports_the_scheduling` | C (refused without the creator's, and without `Builder::scheduling`'s record: the census's second thread is given its creator's scheduling explicitly); the pthread's own-stack bit excused |
//! | `schedpolicy`, `schedparam`: the creator's, or the attribute's | the same | the same | C |
//! | `joinstate` = joinable and the kernel's clear-tid word (2.43; `joinid` before, 0 for joinable) | `write_header`; `life.rs` clone request | `glibc_duties.rs` `glibc_thread_calls_work_on_a_raw_thread` | C (refused, 2.43), K |
//! | `start_routine`, `arg` | skipped: a raw thread starts at rawthread's entry, from its clone request | — | C excused (descriptor) |
//! | `sigmask` = the creator's, for the new thread to restore | skipped: a raw thread starts with its mask from the clone | `std_compat.rs` `signals_from_a_thread_s_first_instruction` | C excused (found by the probe) |
//! | `__nptl_nthreads` + 1 before clone, − 1 if it fails | `duties.rs` `count` (from `life.rs`), `uncount` (`Block::never_started`) | `last_thread.rs` | G (refused) |
//! | on `_dl_stack_used`, under `_dl_stack_cache_lock` (rawthread: `_dl_stack_user`, stack "user") | `lists.rs` `list` | `glibc_lists.rs` (setuid, dlopen, dlclose, gdb, fork) | C; the list links excused (neighbours) |
//! | `lock` taken for the creator's set-up (`stopped_start`) | `life.rs` gate | `options.rs` | — |
//! | signals blocked over the clone, the creator's mask restored in the child | only when a mask or a gate asks (`life.rs`): the block is complete before the thread exists | `std_compat.rs` `signals_from_a_thread_s_first_instruction` | — |
//! | the locale's ctype tables (`__ctype_init`) | `write_header`, in the creator | `std_compat.rs` `raw_threads_start_in_the_global_locale` | C |
//! | the resolver state in `struct pthread`, `__resp` pointed at it | `write_header` (rawthread's own `res_state` below the TLS) | `std_compat.rs` `resolver_state_is_per_thread` | C excused (elsewhere on purpose) |
//! | `getrandom_buf` null in a new thread (2.41+) | handed on instead (`handover.rs` `Legacy`) | `glibc_duties.rs` `getrandom_states_are_handed_on` | P (refused when not handed on, 2.41 and 2.43) |
//! | `report_events`, `eventbuf`: debugger events, when a debugger asks | skipped: only under `td_ta_set_event`; gdb finds raw threads on the list | `glibc_lists.rs` `gdb_info_threads_lists_raw_threads_by_name` | C |
//! | `cleanup_jmp_buf`: where `pthread_exit` and cancellation unwind to | skipped: `pthread_exit` and `pthread_cancel` are not for raw threads (see Known limits) | — | C excused (found by the probe: it points into `start_thread`'s frame) |
//! | `thread_local!` destructors (`__call_tls_dtors`) | `duties.rs` `leave` | `std_compat.rs` `thread_local_destructors_have_run_when_join_returns` | X, P |
//! | pthread-key destructors, then the in-TCB key block and `specific_used` cleared (`__nptl_deallocate_tsd`) | `leave` (`run_key_destructors`) | `std_compat.rs` `pthread_key_destructors_run_at_exit` | X (found by the census: raw threads left both; refused without) |
//! | malloc's tcache and arena let go (`__libc_thread_freeres`) | handed on instead (`Legacy`) | `api.rs` `allocating_threads_do_not_leak_malloc_memory` | P; C and X excused (handed on), and malloc's shut-down flag (2.36 to 2.41, found by the probe) |
//! | the resolver's sockets, `strerror`/`strsignal` buffers, the `dlerror` message | `leave` | `api.rs` `glibc_per_thread_buffers_do_not_leak` | X, P |
//! | Sun RPC state (`__rpc_thread_destroy`) | skipped: compatibility symbols no program built today reaches | — | P (not in the battery) |
//! | `cancelhandling` \|= EXITING | `leave` | — (no call a raw thread supports reads it) | X |
//! | `joinstate` → exiting, for `pthread_join`/`pthread_detach` (2.43) | skipped: those are not for raw threads; the kernel clears it at exit | — | X |
//! | `__nptl_nthreads` − 1; the last thread calls `exit(0)` | `leave` | `last_thread.rs` | G (refused) |
//! | every signal but SIGSETXID blocked for the last steps, the mask built in `sigmask` | `leave` (`sigmask` found by the probe) | — (a test would have to catch a signal in the thread's last instructions) | X on `sigmask` (found by the census: raw threads did neither; refused without the word, not without the mask itself) |
//! | `exiting` = true under `exit_lock` (read by `pthread_kill`) | `leave` | `glibc_duties.rs` `pthread_kill_on_an_exited_raw_thread` | X (refused) |
//! | the vDSO `getrandom` state back to glibc's pool | handed on (`Legacy`) | `getrandom_states_are_handed_on` | P (refused when not handed on) |
//! | dirty stack pages given back (`advise_stack_range`) | `region.rs` `release_stack`, from `life.rs` at a thread's end | `lifecycle.rs` `stack_memory_is_given_back` | — (not a word) |
//! | answer a pending setxid before exiting | `lists.rs` `unlist`: off the list, with SIGSETXID open, under the lock | `glibc_lists.rs` `setxid_reaches_a_thread_in_its_tls_destructor` | — |
//! | the priority-protect buffer `tpp` freed (`__nptl_free_tcb`) | `leave` | `glibc_duties.rs` `priority_protect_buffers_are_freed` | X, P (refused) |
//! | `tid` = 0 (2.43, where the kernel clears `joinstate`) | `leave` | `glibc_thread_calls_work_on_a_raw_thread` | X |
//! | `SYS_exit` with the clear-tid word, which the joiner waits on | `sys::exit_thread`, `join.rs` | `api.rs`, `lifecycle.rs` | K, X |
//! | the DTV and dynamic TLS freed when the stack is reused or freed | `block.rs` `renew`, `Drop` | `api.rs` `no_mapping_or_tls_leak_over_many_threads` | — (after the join) |
//! | stack mappings named (`name_stack_maps`, 2.42+, glibc's own stacks) | skipped: rawthread's regions are its own mappings | — | — |
//!
//! Every private offset above comes from a libthread_db descriptor or is
//! found and proven by [`probe`] on the running glibc (`layout.rs` and
//! `probe.rs` say how); none is a hard-coded number.

mod block;
mod census;
mod duties;
mod handover;
mod layout;
mod lists;
mod probe;

pub(crate) use block::Block;
pub(crate) use census::{Created, Scheduling, check as census, lock as census_lock};
pub(crate) use duties::{count, enter, leave, reset_in_process_child};
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
/// every call) and runs [`probe`]. Threads racing here probe one at a
/// time (under the census's lock, which `fork()` takes too): the first
/// publishes, the others find it published.
///
/// A shortage the probe meets is that error, never `Unsupported`: ENOMEM
/// when its stacks cannot be mapped or a malloc in it returns NULL (or
/// malloc can give its thread no arena and the caller has none to lend:
/// a thread made under the same address-space limit), EAGAIN (or ENOMEM)
/// when `pthread_create` is refused. Such an error may pass, and every
/// later spawn tries again, as often as it is called, each try costing up
/// to two `pthread_create`s. A failed try leaves behind:
/// * no mapping: the probe's stacks are unmapped, and its threads, on
///   those stacks, are joined (glibc unlists them and frees their DTVs);
/// * no thread: both are joined before the probe returns (the kernel may
///   list a joined thread in /proc/self/task for a moment longer);
/// * no malloc state: glibc frees each thread's tcache and detaches its
///   arena at its exit; an arena a probe thread made is put on malloc's
///   free list and taken by the next new thread, the next try's included
///   (glibc never unmaps arenas); an arena the probe borrowed is given
///   back before its thread exits;
/// * glibc in multi-threaded mode, for good, once a probe thread was made
///   (as after any `pthread_create`): this is wanted (see [`probe`]).
///
/// A try that fails with `Unsupported` leaves the same, and later spawns
/// try again too. `tests/faults.rs` checks the counts of mappings and
/// tasks after failed tries under an address-space limit.
pub(crate) fn get() -> io::Result<&'static Glibc> {
    static GLIBC: LazyBox<Glibc> = LazyBox::new();
    if let Some(glibc) = GLIBC.get() {
        return Ok(glibc);
    }
    // One probe at a time, as one census: a probe's pthread would count in
    // the thread count another census watches (rule G).
    let _one = census::lock();
    if let Some(glibc) = GLIBC.get() {
        return Ok(glibc);
    }
    let mut glibc = layout::discover().map_err(layout::unsupported)?;
    glibc.probed = probe::probe(&glibc)?;
    Ok(GLIBC.publish(glibc).0)
}
