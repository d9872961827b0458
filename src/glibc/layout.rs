//! What rawthread knows of this glibc's private layout: every private
//! symbol and offset, looked up once with `dlsym` (the offsets from the
//! descriptors glibc exports for libthread_db) and checked against the
//! calling thread, which glibc made, before the first raw thread exists. A
//! missing symbol or a failed check is an `Unsupported` error from the
//! first spawn, never a crash.

use std::ffi::{CStr, c_void};
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32};

use super::handover::MallocWords;
use crate::region::BlockGeometry;

/// Fixed x86_64 `tcbhead_t` offsets: ABI, since compilers emit `%fs:0x28`
/// for the stack protector.
pub(super) const TCB_TCB: usize = 0x00;
pub(super) const TCB_SELF: usize = 0x10;
pub(super) const TCB_MULTIPLE_THREADS: usize = 0x18;
pub(super) const TCB_STACK_GUARD: usize = 0x28;
pub(super) const TCB_POINTER_GUARD: usize = 0x30;
pub(super) const TCB_FEATURE_1: usize = 0x48;

/// glibc's per-thread `pthread_getspecific` storage: 32 level-2 blocks of 32
/// keys; the first block lives inside `struct pthread`, just before the
/// `specific` array of pointers.
pub(super) const KEY_L1: usize = 32;
pub(super) const KEY_L2: usize = 32;
/// glibc's `PTHREAD_DESTRUCTOR_ITERATIONS`.
pub(super) const KEY_DESTRUCTOR_ROUNDS: usize = 4;

/// `struct pthread_key_data` and `struct pthread_key_struct`: `{seq, ptr}`.
/// Checked against glibc's descriptors at start-up.
#[repr(C)]
pub(super) struct KeyData {
    pub(super) seq: usize,
    pub(super) data: *mut c_void,
}
#[repr(C)]
pub(super) struct KeyStruct {
    pub(super) seq: usize,
    pub(super) destr: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// `struct __res_state` is 568 bytes on x86_64; `nscount` is at 16.
pub(super) const RES_STATE_SIZE: usize = 576; // 568 rounded up to 64
pub(super) const RES_NSCOUNT: usize = 16;

/// rseq `cpu_id` values glibc uses before and instead of registration.
pub(super) const RSEQ_CPU_ID_UNINITIALIZED: i32 = -1;
pub(super) const RSEQ_CPU_ID_REGISTRATION_FAILED: i32 = -2;
/// The rseq area's `cpu_id` field.
pub(super) const RSEQ_CPU_ID: usize = 4;
/// The original `struct rseq` (32 bytes), which every registration covers.
pub(super) const RSEQ_MIN_LEN: u32 = 32;

/// `struct pthread`'s `flags` bits rawthread writes (glibc's
/// `internaltypes.h`, the same from 2.35 to 2.43): the scheduling was given
/// explicitly, the priority and the policy are recorded, rseq is
/// registered.
pub(super) const ATTR_FLAG_NOTINHERITSCHED: i32 = 0x0002;
pub(super) const ATTR_FLAG_STACKADDR: i32 = 0x0008;
pub(super) const ATTR_FLAG_SCHED_SET: i32 = 0x0020;
pub(super) const ATTR_FLAG_POLICY_SET: i32 = 0x0040;
pub(super) const ATTR_FLAG_DO_RSEQ: i32 = 0x0080;
/// `cancelhandling`'s "thread is exiting" bit, which `start_thread` sets
/// after the thread's destructors.
pub(super) const EXITING_BITMASK: i32 = 0x10;
/// `joinstate`'s value for a joinable thread (glibc 2.43); the kernel
/// clears it to `THREAD_STATE_EXITED` (0) at the thread's exit.
pub(super) const THREAD_STATE_JOINABLE: u32 = 2;
/// `struct robust_list_head`: `list`, `futex_offset`, `list_op_pending`.
pub(super) const ROBUST_HEAD_LEN: usize = 24;
/// What glibc blocks in a thread's last steps: every signal but SIGSETXID
/// (33), which a `setuid()` under way needs answered.
pub(super) const EXIT_SIGNAL_MASK: u64 = !(1 << (33 - 1));

/// Everything looked up once.
pub(crate) struct Glibc {
    /// `_dl_get_tls_static_info`: static TLS size (TCB included) and align.
    pub(super) static_size: usize,
    pub(super) static_align: usize,
    /// `sizeof(struct pthread)`.
    pub(super) tcb_size: usize,
    /// Offsets inside `struct pthread`.
    pub(super) tid: usize,
    pub(super) list: usize,
    pub(super) specific: usize,
    /// `int cancelhandling`, and `int flags` just after it (the probe
    /// proves `flags` through `pthread_getattr_np`).
    pub(super) cancelhandling: usize,
    pub(super) flags: usize,
    /// `start_routine`, with `arg` beside it: what `pthread_create` tells
    /// its thread to run (the census excuses them).
    pub(super) start_routine: usize,
    /// `int schedpolicy` and `schedparam.sched_priority`.
    pub(super) schedpolicy: usize,
    pub(super) sched_priority: usize,
    /// `__nptl_nthreads`: how many threads live; the last to leave calls
    /// `exit(0)`.
    pub(super) nthreads: usize,
    /// `bool specific_used`, which `pthread_setspecific` sets when it
    /// stores a value: what glibc's own exit checks before it looks for
    /// key destructors to run. It lies between the `specific` array and
    /// `report_events` (whose offset glibc exports) in every glibc from
    /// 2.34 to 2.43; `discover` checks that the two leave it one byte.
    pub(super) specific_used: usize,
    /// `__pthread_keys[1024]`.
    pub(super) keys: *const KeyStruct,
    /// `__rseq_offset` (from tp) and the length to register (0: glibc did
    /// not register rseq for its own threads, so neither do we).
    pub(super) rseq_offset: isize,
    pub(super) rseq_len: u32,
    /// The `__resp` TLS slot's offset from tp.
    pub(super) resp: isize,
    /// libc's own TLS block (its `.tdata` and `.tbss`): its distance below
    /// tp and its length.
    pub(super) libc_tls_below_tp: usize,
    pub(super) libc_tls_len: usize,
    /// Whether `malloc` is glibc's own, not one that replaces it (an
    /// `LD_PRELOAD`ed or linked-in allocator, valgrind's), whose per-thread
    /// state is its own.
    pub(super) glibc_malloc: bool,
    pub(super) allocate_tls: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    pub(super) deallocate_tls: unsafe extern "C" fn(*mut c_void, bool),
    pub(super) call_tls_dtors: unsafe extern "C" fn(),
    /// The offsets from tp of the locale's ctype table pointers that
    /// `isalpha()`, `toupper()`, ... read (`*__ctype_b_loc()`,
    /// `*__ctype_tolower_loc()`, `*__ctype_toupper_loc()`), which start out
    /// null in a new thread's TLS.
    pub(super) ctype: [isize; 3],
    pub(super) res_iclose: unsafe extern "C" fn(*mut c_void, bool),
    /// glibc's thread lists, which raw threads join (`lists.rs`).
    pub(super) lists: Lists,
    /// What the probe found in a thread glibc made (`probe.rs`).
    pub(super) probed: Probed,
}

/// glibc's thread lists, in ld.so's `_rtld_global`, and the fields of
/// `struct pthread` that the code walking them reads. The two list heads
/// come from libthread_db's descriptors. The lock has none: its place
/// follows from the order of `struct rtld_global`, the same from glibc
/// 2.34 to 2.43 (`_dl_stack_used`, `_dl_stack_user`, `_dl_stack_cache`,
/// `_dl_stack_cache_actsize`, `_dl_in_flight_stack`,
/// `_dl_stack_cache_lock`), and the probe proves it is the lock
/// `pthread_create` takes before any raw thread uses it.
pub(super) struct Lists {
    /// Addresses of the list heads (`list_t`) and of the words after them.
    pub(super) used: usize,
    pub(super) user: usize,
    pub(super) cache: usize,
    pub(super) in_flight: usize,
    pub(super) lock: usize,
    /// Where `struct pthread` says its stack is the user's.
    pub(super) user_stack: UserStack,
}

/// The field that tells `fork()` which list the forking thread goes back
/// to in the child: `bool user_stack` (true) just after `report_events`
/// until glibc 2.41; from 2.42 `enum allocate_stack_mode_t stack_mode` in
/// its place, 4-aligned, whose user value is `ALLOCATE_GUARD_USER` (2).
#[derive(Clone, Copy)]
pub(super) struct UserStack {
    pub(super) offset: usize,
    pub(super) wide: bool,
}

impl UserStack {
    fn after_report_events(report_events: usize, glibc_minor: u32) -> UserStack {
        if glibc_minor >= 42 {
            UserStack { offset: (report_events + 1).next_multiple_of(4), wide: true }
        } else {
            UserStack { offset: report_events + 1, wide: false }
        }
    }

    /// The value of a thread whose stack glibc did not allocate.
    pub(super) fn user(self) -> u32 {
        if self.wide { 2 } else { 1 }
    }

    /// The field in the `struct pthread` at `tp`.
    ///
    /// # Safety
    /// `tp` is a live `struct pthread` of this glibc.
    pub(super) unsafe fn read(self, tp: usize) -> u32 {
        // SAFETY: per the contract, the field lies inside it.
        unsafe { if self.wide { *at::<u32>(tp, self.offset) } else { u32::from(*at::<u8>(tp, self.offset)) } }
    }

    /// Marks the `struct pthread` at `tp` as running on a stack of its own.
    ///
    /// # Safety
    /// `tp` is a `struct pthread` of this glibc that nobody else writes.
    pub(super) unsafe fn mark_user(self, tp: usize) {
        // SAFETY: per the contract.
        unsafe {
            if self.wide {
                *at::<u32>(tp, self.offset) = self.user();
            } else {
                *at::<u8>(tp, self.offset) = 1;
            }
        }
    }
}

/// Where glibc keeps per-thread state that only a thread made by glibc
/// shows, found by the probe (`probe.rs`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Probed {
    /// Offset of `stackblock` in `struct pthread`; `stackblock_size`,
    /// `guardsize`, `reported_guardsize` and `tpp` follow it, word by word
    /// (each proven by the probe).
    pub(super) stackblock: usize,
    /// `struct priority_protection_data *tpp`, which a priority-protect
    /// mutex's first lock allocates.
    pub(super) tpp: usize,
    /// The word the kernel clears at a thread's exit
    /// (`CLONE_CHILD_CLEARTID`), as glibc registers it for its own threads:
    /// `tid` up to glibc 2.42, `joinstate` from 2.43.
    pub(super) exit_word: usize,
    /// `struct robust_list_head robust_head` (`robust_prev` is the word
    /// before it), and the `futex_offset` glibc writes there.
    pub(super) robust_head: usize,
    pub(super) robust_futex_offset: isize,
    /// `bool exiting` and the `int exit_lock` guarding it, which
    /// `pthread_kill` reads.
    pub(super) exiting: usize,
    pub(super) exit_lock: usize,
    /// `internal_sigset_t sigmask`, where glibc builds the mask it blocks in
    /// a thread's last steps ([`EXIT_SIGNAL_MASK`]); 0 if not found.
    pub(super) exit_sigmask: usize,
    /// malloc's flag, in libc's TLS (this far below tp), that the thread's
    /// cache is shut down, which glibc's exit sets (`tcache_shutting_down`,
    /// glibc 2.36 to 2.41): found as the one word of libc's TLS that the
    /// exit of a thread that made no call writes; 0 if none.
    pub(super) malloc_shut_down: usize,
    /// `void *getrandom_buf` (glibc 2.41 and later, with a kernel that has
    /// the vDSO `getrandom`): the thread's vDSO state; 0 where a thread's
    /// `getrandom()` keeps none.
    pub(super) getrandom_buf: usize,
    /// The words of malloc's per-thread state.
    pub(super) malloc: MallocWords,
    /// Offsets in `struct pthread` of the buffers that `strerror` and
    /// `strsignal` allocate for unknown numbers (its `tls_state`).
    pub(super) strerror_buf: usize,
    pub(super) strsignal_buf: usize,
}

// SAFETY: `keys` points at glibc's process-wide key table, which glibc itself
// reads from every thread; everything else is plain data and fn pointers.
unsafe impl Send for Glibc {}
// SAFETY: as above; nothing changes after discovery.
unsafe impl Sync for Glibc {}

pub(super) fn unsupported(why: String) -> io::Error {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(gnu_get_libc_version()) };
    io::Error::new(io::ErrorKind::Unsupported, format!("rawthread: {why} (glibc {})", version.to_string_lossy()))
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

fn dlsym(name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: RTLD_DEFAULT and a NUL-terminated name are all dlsym needs.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        Err(format!("glibc symbol {name:?} not found (rawthread needs glibc >= 2.35 on x86_64)"))
    } else {
        Ok(p)
    }
}

/// A glibc function looked up by name.
///
/// # Safety
/// `F` must be the function's true type.
unsafe fn function<F: Copy>(name: &CStr) -> Result<F, String> {
    let p = dlsym(name)?;
    // SAFETY: the caller names the function's real signature; F is a fn
    // pointer, the same size as a data pointer.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// A `u32` glibc exports as data.
fn read_u32(name: &CStr) -> Result<u32, String> {
    // SAFETY: each name passed here is a glibc `u32` (or a u32 array).
    Ok(unsafe { *(dlsym(name)? as *const u32) })
}

/// The byte offset of a `struct pthread` field from its libthread_db
/// descriptor `{bits, count, offset}`.
fn field_offset(name: &CStr) -> Result<usize, String> {
    // SAFETY: `_thread_db_pthread_*` descriptors are `u32[3]`.
    let d = unsafe { *(dlsym(name)? as *const [u32; 3]) };
    Ok(d[2] as usize)
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("glibc layout check failed: {what}")) }
}

/// The calling thread's thread pointer. On x86_64 glibc `pthread_self()`
/// returns `header.self`, which is `tp` (checked in `discover`).
pub(crate) fn current_tp() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// The field of type `T` at `tp + off` (dereferencing it is the caller's
/// unsafe step).
pub(super) fn at<T>(tp: usize, off: usize) -> *mut T {
    (tp + off) as *mut T
}

pub(super) fn discover() -> Result<Glibc, String> {
    // SAFETY (for every `function` below): the signatures are glibc's:
    // void _dl_get_tls_static_info(size_t *, size_t *); void *_dl_allocate_tls(void *);
    // void _dl_deallocate_tls(void *, bool); void __call_tls_dtors(void);
    // const T **__ctype_{b,tolower,toupper}_loc(void).
    let get_static: unsafe extern "C" fn(*mut usize, *mut usize) = unsafe { function(c"_dl_get_tls_static_info")? };
    let (mut static_size, mut static_align) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { get_static(&mut static_size, &mut static_align) };
    let (libc_tls_below_tp, libc_tls_len) = find_libc_tls()?;
    let specific = field_offset(c"_thread_db_pthread_specific")?;
    let cancelhandling = field_offset(c"_thread_db_pthread_cancelhandling")?;
    let report_events = field_offset(c"_thread_db_pthread_report_events")?;

    let g = Glibc {
        static_size,
        static_align,
        tcb_size: read_u32(c"_thread_db_sizeof_pthread")? as usize,
        tid: field_offset(c"_thread_db_pthread_tid")?,
        list: field_offset(c"_thread_db_pthread_list")?,
        specific,
        cancelhandling,
        flags: cancelhandling + size_of::<i32>(),
        start_routine: field_offset(c"_thread_db_pthread_start_routine")?,
        schedpolicy: field_offset(c"_thread_db_pthread_schedpolicy")?,
        sched_priority: field_offset(c"_thread_db_pthread_schedparam_sched_priority")?,
        nthreads: dlsym(c"__nptl_nthreads")? as usize,
        specific_used: specific + KEY_L1 * size_of::<usize>(),
        keys: dlsym(c"__pthread_keys")? as *const KeyStruct,
        // SAFETY: public glibc 2.35 data: `const ptrdiff_t` and `const unsigned int`.
        rseq_offset: unsafe { *(dlsym(c"__rseq_offset")? as *const isize) },
        rseq_len: match read_u32(c"__rseq_size")? {
            0 => 0,
            // The kernel wants at least the original 32-byte struct rseq.
            n => n.max(32),
        },
        // dlsym of a TLS symbol answers with the calling thread's copy.
        resp: dlsym(c"__resp")? as isize - current_tp() as isize,
        libc_tls_below_tp,
        libc_tls_len,
        glibc_malloc: same_object(dlsym(c"malloc")?, dlsym(c"gnu_get_libc_version")?) && !running_on_valgrind(),
        // SAFETY: see above.
        allocate_tls: unsafe { function(c"_dl_allocate_tls")? },
        // SAFETY: see above.
        deallocate_tls: unsafe { function(c"_dl_deallocate_tls")? },
        // SAFETY: see above.
        call_tls_dtors: unsafe { function(c"__call_tls_dtors")? },
        ctype: ctype_offsets()?,
        // SAFETY: see above; void __res_iclose(res_state, bool free_addr).
        res_iclose: unsafe { function(c"__res_iclose")? },
        lists: find_lists(report_events)?,
        probed: Probed::default(),
    };

    // Check every assumption against the calling thread, which glibc made.
    let tp = current_tp();
    check(g.static_align.is_power_of_two() && g.static_size >= g.tcb_size, "static TLS info")?;
    check(g.tcb_size >= g.specific + KEY_L1 * size_of::<usize>(), "sizeof(struct pthread)")?;
    check(g.specific_used + 1 == report_events, "specific_used between specific[] and report_events")?;
    check(g.tcb_size >= g.schedpolicy.max(g.sched_priority).max(g.flags) + 4, "struct pthread sched fields")?;
    // libthread_db reads the thread count through this descriptor: a
    // 32-bit variable at the symbol itself.
    let nthreads = dlsym(c"_thread_db___nptl_nthreads")? as *const [u32; 3];
    // SAFETY: a `u32[3]` descriptor.
    check(unsafe { (*nthreads)[0] == 32 && (*nthreads)[2] == 0 }, "__nptl_nthreads is a 32-bit counter")?;
    // SAFETY: the symbol is glibc's `unsigned int`, and this thread counts.
    check(unsafe { *(g.nthreads as *const u32) } >= 1, "__nptl_nthreads counts the calling thread")?;
    check(
        libc_tls_len <= LIBC_TLS_MAX
            && libc_tls_below_tp <= static_size - g.tcb_size
            && libc_tls_below_tp % size_of::<usize>() == 0,
        "libc's TLS block lies in static TLS, word-aligned",
    )?;
    check(
        g.ctype.iter().all(|&off| off < 0 && off.unsigned_abs() <= libc_tls_below_tp && off % 8 == 0),
        "the ctype table pointers lie in libc's static TLS",
    )?;
    // SAFETY: tp is the calling thread's live TCB, at least tcb_size bytes.
    unsafe {
        check(*at::<usize>(tp, TCB_TCB) == tp && *at::<usize>(tp, TCB_SELF) == tp, "tcbhead_t tcb/self")?;
        check(*at::<i32>(tp, g.tid) == libc::gettid(), "struct pthread tid")?;
        check(
            *at::<usize>(tp, g.specific) == tp + g.specific - KEY_L2 * size_of::<KeyData>(),
            "specific[0] == specific_1stblock",
        )?;
    }
    for (name, want) in [
        (c"_thread_db_sizeof_pthread_key_data", size_of::<KeyData>()),
        (c"_thread_db_sizeof_pthread_key_struct", size_of::<KeyStruct>()),
    ] {
        check(read_u32(name)? as usize == want, "pthread key record size")?;
    }
    for (name, want) in [
        (c"_thread_db_pthread_key_data_seq", 0),
        (c"_thread_db_pthread_key_data_data", 8),
        (c"_thread_db_pthread_key_struct_seq", 0),
        (c"_thread_db_pthread_key_struct_destr", 8),
    ] {
        check(field_offset(name)? == want, "pthread key field offset")?;
    }
    let keys = dlsym(c"_thread_db___pthread_keys")? as *const [u32; 3];
    // SAFETY: a `u32[3]` descriptor.
    check(unsafe { (*keys)[1] } as usize == KEY_L1 * KEY_L2, "PTHREAD_KEYS_MAX")?;

    Ok(g)
}

/// Where this thread's ctype table pointers are, from tp: the same in
/// every thread's static TLS.
fn ctype_offsets() -> Result<[isize; 3], String> {
    let mut offsets = [0; 3];
    for (offset, name) in offsets.iter_mut().zip([c"__ctype_b_loc", c"__ctype_tolower_loc", c"__ctype_toupper_loc"]) {
        // SAFETY: see discover(): a function without arguments returning
        // the address of the calling thread's TLS slot.
        let loc: unsafe extern "C" fn() -> *mut usize = unsafe { function(name)? };
        // SAFETY: as above.
        *offset = unsafe { loc() } as isize - current_tp() as isize;
    }
    Ok(offsets)
}

/// `<locale.h>`'s `LC_GLOBAL_LOCALE`, `(locale_t) -1`, which the libc crate
/// lacks.
const LC_GLOBAL_LOCALE: libc::locale_t = -1isize as libc::locale_t;

/// The ctype tables of the global locale, in which a new thread starts:
/// what glibc's `__ctype_init` gives it. `uselocale(LC_GLOBAL_LOCALE)`
/// loads them into the calling thread's slots, and the second call puts
/// its own locale back.
pub(super) fn global_ctype_tables(g: &Glibc) -> [usize; 3] {
    // SAFETY: LC_GLOBAL_LOCALE is always a valid argument.
    let own = unsafe { libc::uselocale(LC_GLOBAL_LOCALE) };
    let tp = current_tp();
    // SAFETY: the calling thread's own slots, found by ctype_offsets.
    let tables = g.ctype.map(|offset| unsafe { *(tp.wrapping_add_signed(offset) as *const usize) });
    // SAFETY: the locale uselocale just returned.
    unsafe { libc::uselocale(own) };
    tables
}

/// glibc's minor version number, from `gnu_get_libc_version()`.
pub(super) fn glibc_minor() -> Result<u32, String> {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy();
    let minor = version.strip_prefix("2.").and_then(|rest| rest.split('.').next()?.parse().ok());
    minor.ok_or_else(|| format!("glibc version {version:?} is not 2.x"))
}

fn find_lists(report_events: usize) -> Result<Lists, String> {
    let rtld = dlsym(c"_rtld_global")? as usize;
    let used = rtld + field_offset(c"_thread_db_rtld_global__dl_stack_used")?;
    let user = rtld + field_offset(c"_thread_db_rtld_global__dl_stack_user")?;
    // Two `list_t`s, then a `list_t`, a `size_t` and a `uintptr_t`.
    check(user == used + 16, "_dl_stack_user follows _dl_stack_used")?;
    Ok(Lists {
        used,
        user,
        cache: user + 16,
        in_flight: user + 40,
        lock: user + 48,
        user_stack: UserStack::after_report_events(report_events, glibc_minor()?),
    })
}

unsafe extern "C" {
    /// Non-zero under valgrind (its client request, in `asm/x86_64.s`,
    /// which a real CPU runs as a no-op).
    fn rawthread_running_on_valgrind() -> u64;
}

/// Whether this process runs under valgrind, which replaces glibc's malloc
/// by its own at the code level, where no symbol lookup sees it.
fn running_on_valgrind() -> bool {
    // SAFETY: touches only its own stack frame and registers.
    unsafe { rawthread_running_on_valgrind() != 0 }
}

/// Whether two symbols' addresses lie in the same loaded object. (By the
/// objects' loaded segments: `dladdr` would also search the object's
/// symbol table, which takes some 10 µs in libc.)
fn same_object(a: *mut c_void, b: *mut c_void) -> bool {
    let base = |p: *mut c_void| {
        let mut base = None;
        each_object(|info, headers| {
            let inside = headers.iter().filter(|h| h.p_type == libc::PT_LOAD).any(|h| {
                let start = info.dlpi_addr as usize + h.p_vaddr as usize;
                (start..start + h.p_memsz as usize).contains(&(p as usize))
            });
            base = inside.then_some(info.dlpi_addr);
            inside
        });
        base
    };
    base(a).is_some_and(|a| Some(a) == base(b))
}

/// Calls `f` on each loaded object (the loader's record of it, and its
/// program headers), in the loader's order, until it returns true.
pub(super) fn each_object(mut f: impl FnMut(&libc::dl_phdr_info, &[libc::Elf64_Phdr]) -> bool) {
    type Each<'a> = &'a mut dyn FnMut(&libc::dl_phdr_info, &[libc::Elf64_Phdr]) -> bool;
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, f: *mut c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info, and our closure.
        let (info, f) = unsafe { (&*info, &mut *f.cast::<Each>()) };
        // SAFETY: the loader's dlpi_phnum program headers for this object.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        f(info, headers).into()
    }
    let mut f: Each = &mut f;
    // SAFETY: `each` only reads what the loader hands it, and calls `f`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut f).cast()) };
}

/// The largest libc TLS block [`probe`] compares word by word (208 bytes
/// in glibc 2.36).
pub(super) const LIBC_TLS_MAX: usize = 1024;

/// Finds libc's own TLS block as the module whose block holds `errno`, and
/// returns it as (distance below tp, length).
fn find_libc_tls() -> Result<(usize, usize), String> {
    // SAFETY: __errno_location has no preconditions.
    let errno = unsafe { libc::__errno_location() } as usize;
    let mut found = None;
    each_object(|info, headers| {
        let block = info.dlpi_tls_data as usize;
        found = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_TLS && block != 0)
            .map(|h| (block, h.p_memsz as usize))
            .find(|&(block, len)| (block..block + len).contains(&errno));
        found.is_some()
    });
    let (start, len) = found.ok_or("libc's TLS block (the one holding errno) not found")?;
    Ok((current_tp().checked_sub(start).ok_or("libc's TLS block is not below the thread pointer")?, len))
}

impl Glibc {
    /// The room the block needs in a [`Region`].
    pub(crate) fn geometry(&self) -> BlockGeometry {
        BlockGeometry {
            static_tls: self.static_size - self.tcb_size,
            resolver: RES_STATE_SIZE,
            tcb: self.tcb_size,
            align: self.static_align,
        }
    }

    /// The word that holds the thread's tid while it lives and that the
    /// kernel clears (and futex-wakes) when it exits.
    ///
    /// # Safety
    /// `tp` is a thread block of this glibc's layout, mapped for as long as
    /// the reference is held.
    pub(super) unsafe fn tid_word(&self, tp: usize) -> &AtomicI32 {
        // SAFETY: tid is an aligned i32 inside the TCB at `tp`, which the
        // caller keeps mapped.
        unsafe { AtomicI32::from_ptr(at(tp, self.tid)) }
    }

    /// The word the kernel clears and wakes at the thread's exit, which
    /// `join` waits on (see [`Probed::exit_word`]).
    ///
    /// # Safety
    /// As [`Glibc::tid_word`].
    pub(super) unsafe fn exit_word(&self, tp: usize) -> &AtomicI32 {
        // SAFETY: an aligned 32-bit word inside the TCB at `tp`, which the
        // caller keeps mapped.
        unsafe { AtomicI32::from_ptr(at(tp, self.probed.exit_word)) }
    }

    /// `__nptl_nthreads`.
    pub(super) fn nthreads(&self) -> &AtomicU32 {
        // SAFETY: glibc's aligned `unsigned int`, alive for the process.
        unsafe { AtomicU32::from_ptr(self.nthreads as *mut u32) }
    }

    /// The thread's rseq area, inside its TCB.
    pub(super) fn rseq_area(&self, tp: usize) -> usize {
        tp.wrapping_add_signed(self.rseq_offset)
    }

    /// The `__resp` slot: where the thread's resolver state is.
    pub(super) fn resp_slot(&self, tp: usize) -> *mut usize {
        tp.wrapping_add_signed(self.resp) as *mut usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libc's `malloc` and `gnu_get_libc_version` share an object; libc's
    /// `malloc` and a function of this executable do not; an address in
    /// no object lies in none.
    #[test]
    fn same_object_tells_objects_apart() {
        let libc = |name| dlsym(name).unwrap();
        assert!(same_object(libc(c"malloc"), libc(c"gnu_get_libc_version")));
        let ours = same_object_tells_objects_apart as *mut c_void;
        assert!(!same_object(libc(c"malloc"), ours));
        assert!(!same_object(std::ptr::without_provenance_mut(8), std::ptr::without_provenance_mut(8)));
    }
}
