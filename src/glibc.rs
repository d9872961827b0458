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

use std::alloc::Layout;
use std::ffi::{CStr, c_void};
use std::io;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::AtomicI32;
use std::sync::{Condvar, Mutex, MutexGuard};

use memmap2::MmapOptions;

use crate::lazy::LazyBox;
use crate::region::{BlockGeometry, Plan, Region, ThreadLayout};
use crate::sys;

/// Fixed x86_64 `tcbhead_t` offsets: ABI, since compilers emit `%fs:0x28`
/// for the stack protector.
const TCB_TCB: usize = 0x00;
const TCB_SELF: usize = 0x10;
const TCB_MULTIPLE_THREADS: usize = 0x18;
const TCB_STACK_GUARD: usize = 0x28;
const TCB_POINTER_GUARD: usize = 0x30;
const TCB_FEATURE_1: usize = 0x48;

/// glibc's per-thread `pthread_getspecific` storage: 32 level-2 blocks of 32
/// keys; the first block lives inside `struct pthread`, just before the
/// `specific` array of pointers.
const KEY_L1: usize = 32;
const KEY_L2: usize = 32;
/// glibc's `PTHREAD_DESTRUCTOR_ITERATIONS`.
const KEY_DESTRUCTOR_ROUNDS: usize = 4;

/// `struct pthread_key_data` and `struct pthread_key_struct`: `{seq, ptr}`.
/// Checked against glibc's descriptors at start-up.
#[repr(C)]
struct KeyData {
    seq: usize,
    data: *mut c_void,
}
#[repr(C)]
struct KeyStruct {
    seq: usize,
    destr: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// `struct __res_state` is 568 bytes on x86_64; `nscount` is at 16.
const RES_STATE_SIZE: usize = 576; // 568 rounded up to 64
const RES_NSCOUNT: usize = 16;

/// rseq `cpu_id` values glibc uses before and instead of registration.
const RSEQ_CPU_ID_UNINITIALIZED: i32 = -1;
const RSEQ_CPU_ID_REGISTRATION_FAILED: i32 = -2;
/// The rseq area's `cpu_id` field.
const RSEQ_CPU_ID: usize = 4;

/// Everything looked up once.
pub(crate) struct Glibc {
    /// `_dl_get_tls_static_info`: static TLS size (TCB included) and align.
    static_size: usize,
    static_align: usize,
    /// `sizeof(struct pthread)`.
    tcb_size: usize,
    /// Offsets inside `struct pthread`.
    tid: usize,
    list: usize,
    specific: usize,
    /// `__pthread_keys[1024]`.
    keys: *const KeyStruct,
    /// `__rseq_offset` (from tp) and the length to register (0: glibc did
    /// not register rseq for its own threads, so neither do we).
    rseq_offset: isize,
    rseq_len: u32,
    /// The `__resp` TLS slot's offset from tp.
    resp: isize,
    /// libc's own TLS block (its `.tdata` and `.tbss`): its distance below
    /// tp and its length.
    libc_tls_below_tp: usize,
    libc_tls_len: usize,
    /// Whether `malloc` is glibc's own, not one that replaces it (an
    /// `LD_PRELOAD`ed or linked-in allocator, valgrind's), whose per-thread
    /// state is its own.
    glibc_malloc: bool,
    allocate_tls: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    deallocate_tls: unsafe extern "C" fn(*mut c_void, bool),
    call_tls_dtors: unsafe extern "C" fn(),
    ctype_init: unsafe extern "C" fn(),
    res_iclose: unsafe extern "C" fn(*mut c_void, bool),
    /// What [`probe`] found in a thread glibc made.
    probed: Probed,
}

/// Where glibc keeps per-thread state that only a thread made by glibc
/// shows, found by [`probe`].
#[derive(Clone, Copy, Default)]
struct Probed {
    /// Offset of `stackblock` in `struct pthread` (`stackblock_size`
    /// follows it).
    stackblock: usize,
    /// malloc's per-thread state (see [`MallocState`]): how far below tp
    /// lie the words of libc's TLS that a thread's first malloc writes, and
    /// their values in a thread that has not used malloc yet.
    malloc_words: usize,
    malloc_below_tp: [usize; MALLOC_WORDS_MAX],
    malloc_fresh: MallocState,
    /// Offsets in `struct pthread` of the buffers that `strerror` and
    /// `strsignal` allocate for unknown numbers (its `tls_state`).
    strerror_buf: usize,
    strsignal_buf: usize,
}

// SAFETY: `keys` points at glibc's process-wide key table, which glibc itself
// reads from every thread; everything else is plain data and fn pointers.
unsafe impl Send for Glibc {}
// SAFETY: as above; nothing changes after discovery.
unsafe impl Sync for Glibc {}

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
    let mut glibc = discover().map_err(unsupported)?;
    glibc.probed = probe(&glibc)?;
    Ok(GLIBC.publish(glibc).0)
}

fn unsupported(why: String) -> io::Error {
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
fn at<T>(tp: usize, off: usize) -> *mut T {
    (tp + off) as *mut T
}

fn discover() -> Result<Glibc, String> {
    // SAFETY (for every `function` below): the signatures are glibc's:
    // void _dl_get_tls_static_info(size_t *, size_t *); void *_dl_allocate_tls(void *);
    // void _dl_deallocate_tls(void *, bool); void __call_tls_dtors(void);
    // void __ctype_init(void).
    let get_static: unsafe extern "C" fn(*mut usize, *mut usize) = unsafe { function(c"_dl_get_tls_static_info")? };
    let (mut static_size, mut static_align) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { get_static(&mut static_size, &mut static_align) };
    let (libc_tls_below_tp, libc_tls_len) = find_libc_tls()?;

    let g = Glibc {
        static_size,
        static_align,
        tcb_size: read_u32(c"_thread_db_sizeof_pthread")? as usize,
        tid: field_offset(c"_thread_db_pthread_tid")?,
        list: field_offset(c"_thread_db_pthread_list")?,
        specific: field_offset(c"_thread_db_pthread_specific")?,
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
        glibc_malloc: same_object(dlsym(c"malloc")?, dlsym(c"gnu_get_libc_version")?) && !sys::running_on_valgrind(),
        // SAFETY: see above.
        allocate_tls: unsafe { function(c"_dl_allocate_tls")? },
        // SAFETY: see above.
        deallocate_tls: unsafe { function(c"_dl_deallocate_tls")? },
        // SAFETY: see above.
        call_tls_dtors: unsafe { function(c"__call_tls_dtors")? },
        // SAFETY: see above.
        ctype_init: unsafe { function(c"__ctype_init")? },
        // SAFETY: see above; void __res_iclose(res_state, bool free_addr).
        res_iclose: unsafe { function(c"__res_iclose")? },
        probed: Probed::default(),
    };

    // Check every assumption against the calling thread, which glibc made.
    let tp = current_tp();
    check(g.static_align.is_power_of_two() && g.static_size >= g.tcb_size, "static TLS info")?;
    check(g.tcb_size >= g.specific + KEY_L1 * size_of::<usize>(), "sizeof(struct pthread)")?;
    check(
        libc_tls_len <= LIBC_TLS_MAX
            && libc_tls_below_tp <= static_size - g.tcb_size
            && libc_tls_below_tp % size_of::<usize>() == 0,
        "libc's TLS block lies in static TLS, word-aligned",
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

/// Whether two symbols' addresses lie in the same loaded object.
fn same_object(a: *mut c_void, b: *mut c_void) -> bool {
    let base = |p| {
        // SAFETY: dladdr only reads the loader's tables; zeroed is a valid
        // Dl_info for it to fill.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        (unsafe { libc::dladdr(p, &mut info) } != 0).then_some(info.dli_fbase)
    };
    base(a).is_some_and(|a| Some(a) == base(b))
}

/// The largest libc TLS block [`probe`] compares word by word (208 bytes
/// in glibc 2.36).
const LIBC_TLS_MAX: usize = 1024;

/// Finds libc's own TLS block as the module whose block holds `errno`, and
/// returns it as (distance below tp, length).
fn find_libc_tls() -> Result<(usize, usize), String> {
    struct Search {
        errno: usize,
        block: Option<(usize, usize)>,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, search: *mut c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info and our own pointer.
        let (info, search) = unsafe { (&*info, &mut *search.cast::<Search>()) };
        if info.dlpi_tls_data.is_null() {
            return 0;
        }
        // SAFETY: the loader's program headers for this module.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_TLS) {
            let block = info.dlpi_tls_data as usize;
            if (block..block + ph.p_memsz as usize).contains(&search.errno) {
                search.block = Some((block, ph.p_memsz as usize));
                return 1;
            }
        }
        0
    }
    // SAFETY: __errno_location has no preconditions.
    let mut search = Search { errno: unsafe { libc::__errno_location() } as usize, block: None };
    // SAFETY: `each` only reads what the loader hands it and writes `search`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut search).cast()) };
    let (start, len) = search.block.ok_or("libc's TLS block (the one holding errno) not found")?;
    Ok((current_tp().checked_sub(start).ok_or("libc's TLS block is not below the thread pointer")?, len))
}

/// The one pthread rawthread ever makes, at the first spawn: it finds, in a
/// thread glibc made, what no exported descriptor gives.
///
/// * Where `struct pthread` keeps `stackblock` and `stackblock_size`: the
///   pthread runs on a stack of ours, and we look for that stack's address
///   and size in its TCB. glibc reads these two words in every thread:
///   `alloca` limits (a quarter of the stack, at most 64 KiB; with 0 there,
///   64 KiB on any stack, and small stacks overflow inside `printf`) and
///   `pthread_getattr_np`.
/// * malloc's per-thread state ([`find_malloc_state`]), and a check that
///   handing it to another thread hands on its cache ([`check_malloc_state`]).
/// * Where `struct pthread` keeps the buffers that `strerror` and
///   `strsignal` allocate for unknown numbers, which glibc frees at a
///   thread's exit: the words of the TCB holding the pointers they return.
///
/// The same pthread puts glibc in multi-threaded mode the only way that
/// sets *all* of its state (`__libc_single_threaded`, its SIGCANCEL and
/// SIGSETXID handlers, stdio locks, `multiple_threads` in this thread).
/// Writing the public flag by hand would make malloc lock, but would leave
/// a later real `pthread_create` skipping the handler set-up, and the next
/// `setuid()` kills the process with signal 33.
fn probe(glibc: &Glibc) -> io::Result<Probed> {
    const SIZE: usize = 256 << 10;
    /// What the pthread found: its tp, the offsets, the chunks it freed.
    type Report = (usize, Result<Probed, &'static str>, Freed);
    struct Probe<'a> {
        glibc: &'a Glibc,
        /// The report, once made; then whether the creator has checked
        /// its malloc state (until then the pthread waits, keeping that
        /// state alive and unused).
        stage: Mutex<(Option<Report>, bool)>,
        turn: Condvar,
    }
    impl Probe<'_> {
        fn lock(&self) -> MutexGuard<'_, (Option<Report>, bool)> {
            self.stage.lock().unwrap_or_else(|e| e.into_inner())
        }
        fn wait<'a>(&self, stage: MutexGuard<'a, (Option<Report>, bool)>) -> MutexGuard<'a, (Option<Report>, bool)> {
            self.turn.wait(stage).unwrap_or_else(|e| e.into_inner())
        }
    }
    extern "C" fn run(probe: *mut c_void) -> *mut c_void {
        // SAFETY: the creator's `Probe`, alive until it has joined us.
        let probe = unsafe { &*probe.cast::<Probe>() };
        let tp = current_tp();
        let (found, freed) = match find_malloc_state(probe.glibc, tp) {
            Ok((found, freed)) => (Ok(found), freed),
            Err(e) => (Err(e), Freed::default()),
        };
        let mut stage = probe.lock();
        stage.0 = Some((tp, found, freed));
        probe.turn.notify_all();
        while !stage.1 {
            stage = probe.wait(stage);
        }
        // Only now may this thread allocate again: the chunks it freed
        // had to stay where they were for the check.
        let Some((_, found, _)) = &mut stage.0 else { return ptr::null_mut() };
        *found = found.and_then(|mut found| {
            // SAFETY: strerror and strsignal have no preconditions; the
            // strings stay ours until this thread calls them again.
            let (strerror, strsignal) = unsafe { (libc::strerror(1000), libc::strsignal(200)) };
            let tcb = (tp..tp + probe.glibc.tcb_size).step_by(size_of::<usize>());
            let holding = |p: *mut libc::c_char| {
                // SAFETY: reading this thread's own TCB.
                tcb.clone().filter(move |&w| unsafe { *(w as *const usize) } == p as usize)
            };
            let once = |p| {
                let mut words = holding(p);
                match (words.next(), words.next()) {
                    (Some(w), None) => Ok(w - tp),
                    _ => Err("struct pthread tls_state"),
                }
            };
            found.strerror_buf = once(strerror)?;
            found.strsignal_buf = once(strsignal)?;
            Ok(found)
        });
        ptr::null_mut()
    }
    let mut stack = MmapOptions::new().len(SIZE).stack().map_anon()?;
    let base = stack.as_mut_ptr() as usize;
    let probe = Probe { glibc, stage: Mutex::new((None, false)), turn: Condvar::new() };
    let mut report = (0, Err("the probe did not run"), Freed::default());
    // SAFETY: a stack of ours that outlives the thread (joined below),
    // attributes initialised and destroyed here, and a start routine that
    // uses only `probe`.
    let err = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        let mut err = libc::pthread_attr_setstack(&mut attr, base as *mut c_void, SIZE);
        if err == 0 {
            let mut thread: libc::pthread_t = 0;
            err = libc::pthread_create(&mut thread, &attr, run, (&raw const probe).cast_mut().cast());
            if err == 0 {
                let mut stage = probe.lock();
                while stage.0.is_none() {
                    stage = probe.wait(stage);
                }
                if let Some((tp, found, freed)) = &mut stage.0
                    && let Ok(malloc) = *found
                    && !check_malloc_state(&malloc, *tp, *freed)
                {
                    *found = Err("handing on malloc's per-thread state does not hand on its cache");
                }
                stage.1 = true;
                probe.turn.notify_all();
                drop(stage);
                libc::pthread_join(thread, ptr::null_mut());
                report = probe.lock().0.take().unwrap_or(report);
            }
        }
        libc::pthread_attr_destroy(&mut attr);
        err
    };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    let fail = |what: &str| unsupported(format!("glibc layout check failed: {what}"));
    let (tp, found, _) = report;
    let mut found = found.map_err(fail)?;
    // On a stack it is given, glibc puts the TCB at the top and records
    // the whole stack: {stackblock, stackblock_size} = {base, SIZE}.
    found.stackblock = (base..base + SIZE)
        .contains(&tp)
        .then(|| {
            (0..glibc.tcb_size.saturating_sub(16)).step_by(8).find(|&off| {
                // SAFETY: within the dead thread's TCB, inside our mapping.
                unsafe { *at::<usize>(tp, off) == base && *at::<usize>(tp, off + 8) == SIZE }
            })
        })
        .flatten()
        .ok_or_else(|| fail("struct pthread stackblock"))?;
    Ok(found)
}

/// The sizes [`find_malloc_state`] frees and [`check_malloc_state`] asks
/// for: one that every glibc since 2.26 keeps in the thread's cache, and
/// one that by default goes back to the thread's arena instead.
const PROBE_CHUNKS: [usize; 2] = [200, 4096];

/// Finds malloc's per-thread state in the calling thread, which glibc made
/// and which has not used malloc yet; returns it and the addresses of the
/// chunks the thread freed into it.
///
/// malloc keeps a thread's cache (the tcache) and its arena in libc's TLS,
/// in variables glibc does not export and has moved between versions (2.42
/// moved the tcache pointer from `.tbss` to `.tdata`). Their words are the
/// words of libc's TLS block that the thread's first malloc and free
/// change: nothing else runs in between.
///
/// A malloc that replaces glibc's keeps its own per-thread state, which
/// glibc does not free at a thread's exit either (allocators free theirs
/// in pthread-key destructors, which raw threads run): nothing to find.
fn find_malloc_state(glibc: &Glibc, tp: usize) -> Result<(Probed, Freed), &'static str> {
    const WORDS: usize = LIBC_TLS_MAX / size_of::<usize>();
    if !glibc.glibc_malloc {
        return Ok(Default::default());
    }
    let block = (tp - glibc.libc_tls_below_tp) as *const usize;
    let words = glibc.libc_tls_len / size_of::<usize>();
    let snapshot = || {
        let mut s = [0usize; WORDS];
        // SAFETY: this thread's own libc TLS block, `words` long (checked
        // against LIBC_TLS_MAX at discovery).
        unsafe { ptr::copy_nonoverlapping(block, s.as_mut_ptr(), words) };
        s
    };
    let fresh = snapshot();
    // SAFETY: malloc and free; the addresses are only compared from here on.
    let freed = unsafe {
        let chunks = PROBE_CHUNKS.map(|size| libc::malloc(size));
        chunks.map(|p| {
            libc::free(p);
            p as usize
        })
    };
    let used = snapshot();
    let mut found = Probed::default();
    for i in (0..words).filter(|&i| fresh[i] != used[i]) {
        if found.malloc_words == MALLOC_WORDS_MAX {
            return Err("malloc's per-thread state is larger than expected");
        }
        found.malloc_below_tp[found.malloc_words] = glibc.libc_tls_below_tp - i * size_of::<usize>();
        found.malloc_fresh.0[found.malloc_words] = fresh[i];
        found.malloc_words += 1;
    }
    if found.malloc_words == 0 {
        return Err("malloc's per-thread state is not in libc's TLS");
    }
    Ok((found, freed))
}

/// The chunks [`find_malloc_state`] freed, by size.
type Freed = [usize; PROBE_CHUNKS.len()];

/// Shows, in the calling thread, that the malloc state `found` in another
/// (waiting) thread at `tp` carries that thread's cache and arena: with
/// those words in place of its own, this thread's mallocs of the sizes the
/// other freed get the very chunks it freed, the small one from its cache,
/// the large one from its arena. Had a chunk stayed in state the words do
/// not cover, this thread would get a chunk of its own instead. (Where
/// glibc caches nothing per thread, both went back to the arena, and come
/// back from there.)
fn check_malloc_state(found: &Probed, tp: usize, freed: Freed) -> bool {
    if found.malloc_words == 0 {
        return true;
    }
    let me = current_tp();
    // SAFETY: the other thread waits and uses no malloc state meanwhile;
    // ours is swapped out and back around mallocs and frees of our own,
    // with nothing in between that could allocate.
    unsafe {
        let mine = found.read_malloc(me);
        found.write_malloc(me, &found.read_malloc(tp));
        let got = PROBE_CHUNKS.map(|size| libc::malloc(size));
        got.iter().for_each(|&p| libc::free(p));
        found.write_malloc(me, &mine);
        got.map(|p| p as usize) == freed
    }
}

/// The most words malloc's per-thread state may take (2: the tcache and
/// the arena, in glibc 2.35 to 2.43).
const MALLOC_WORDS_MAX: usize = 4;

/// A thread's malloc state (see [`Probed::malloc_words`]): its tcache, with
/// the chunks cached there, and its arena binding. glibc frees the cache
/// and unbinds the arena only in its private thread clean-up
/// (`__libc_thread_freeres`), so rawthread hands the state on to the next
/// thread instead of leaking it with every thread: kept in place when a
/// region is reused, kept in [`MALLOC_STATES`] when one is unmapped.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MallocState([usize; MALLOC_WORDS_MAX]);

impl Probed {
    /// # Safety
    /// `tp` is a thread block no running thread uses, or the caller's own.
    unsafe fn read_malloc(&self, tp: usize) -> MallocState {
        let mut state = MallocState::default();
        for (value, &below) in state.0.iter_mut().zip(&self.malloc_below_tp[..self.malloc_words]) {
            // SAFETY: per the contract; the words are inside libc's TLS.
            *value = unsafe { *((tp - below) as *const usize) };
        }
        state
    }

    /// # Safety
    /// As [`Probed::read_malloc`].
    unsafe fn write_malloc(&self, tp: usize, state: &MallocState) {
        for (&value, &below) in state.0.iter().zip(&self.malloc_below_tp[..self.malloc_words]) {
            // SAFETY: as in read_malloc.
            unsafe { *((tp - below) as *mut usize) = value };
        }
    }
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
    pub(crate) fn tid_word(&self, tp: usize) -> &AtomicI32 {
        // SAFETY: tid is an aligned i32 inside the TCB at `tp`; callers only
        // hold the reference while they own the region.
        unsafe { AtomicI32::from_ptr(at(tp, self.tid)) }
    }

    /// The thread's rseq area, inside its TCB.
    fn rseq_area(&self, tp: usize) -> usize {
        tp.wrapping_add_signed(self.rseq_offset)
    }

    /// The `__resp` slot: where the thread's resolver state is.
    fn resp_slot(&self, tp: usize) -> *mut usize {
        tp.wrapping_add_signed(self.resp) as *mut usize
    }

    /// Fills the thread block of a freshly mapped (zeroed) region, in the
    /// creating thread. On error nothing is left allocated.
    pub(crate) fn init_block(&'static self, region: Region) -> io::Result<Block> {
        let tp = region.tp();
        // Every module's TLS from its init image (never a copy of this
        // thread's live TLS, which would share its malloc cache and its
        // `thread::current()`), `.tbss` zeroed, and a fresh DTV.
        // SAFETY: tp has static_size bytes below it and tcb_size above it,
        // all zero, in memory we own.
        if unsafe { (self.allocate_tls)(tp as *mut c_void) }.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // Adopt the malloc state of a thread whose region was unmapped.
        if let Some(state) = malloc_states().pop() {
            // SAFETY: the words lie inside this region's static TLS.
            unsafe { self.probed.write_malloc(tp, &state) };
        }
        // SAFETY: the block is ours alone until clone.
        unsafe { self.write_header(&region) };
        Ok(Block { region, glibc: self })
    }

    /// The TCB header and the fields glibc reads from a running thread.
    ///
    /// # Safety
    /// The region's TCB has initialised TLS and is ours alone until clone.
    unsafe fn write_header(&self, region: &Region) {
        let tp = region.tp();
        let me = current_tp();
        // SAFETY: `tp` and `me` are both TCBs of at least tcb_size bytes.
        unsafe {
            // tcb and self must be tp: TLS access and pthread_self read them.
            *at::<usize>(tp, TCB_TCB) = tp;
            *at::<usize>(tp, TCB_SELF) = tp;
            // Makes the thread's own atomics take the lock prefix (malloc's
            // fastbins read it).
            *at::<i32>(tp, TCB_MULTIPLE_THREADS) = 1;
            // Process-wide secrets every thread carries: the stack-protector
            // canary, the pointer-mangling key (setjmp, atexit), CET state.
            *at::<usize>(tp, TCB_STACK_GUARD) = *at::<usize>(me, TCB_STACK_GUARD);
            *at::<usize>(tp, TCB_POINTER_GUARD) = *at::<usize>(me, TCB_POINTER_GUARD);
            *at::<u32>(tp, TCB_FEATURE_1) = *at::<u32>(me, TCB_FEATURE_1);
            // An empty list node: fork() in this thread unlinks it from
            // glibc's thread lists in the child.
            let list = tp + self.list;
            *at::<[usize; 2]>(tp, self.list) = [list, list];
            // pthread_{get,set}specific use the in-TCB first block directly,
            // but destructors reach it through specific[0].
            *at::<usize>(tp, self.specific) = tp + self.specific - KEY_L2 * size_of::<KeyData>();
            // sched_getcpu() reads rseq's cpu_id: "not yet" if we will
            // register, "never" if glibc itself does not use rseq.
            if self.rseq_offset != 0 {
                let state =
                    if self.rseq_len != 0 { RSEQ_CPU_ID_UNINITIALIZED } else { RSEQ_CPU_ID_REGISTRATION_FAILED };
                *((self.rseq_area(tp) + RSEQ_CPU_ID) as *mut i32) = state;
            }
            // The resolver's per-thread state (glibc keeps it in struct
            // pthread at an unexported offset; ours sits below the TLS).
            *self.resp_slot(tp) = region.resolver();
            // The usable stack, for glibc's alloca limit and
            // pthread_getattr_np (which reports [stackblock, +size)).
            let stackblock = self.probed.stackblock;
            let stack = region.stack();
            *at::<usize>(tp, stackblock) = stack.start;
            *at::<usize>(tp, stackblock + 8) = stack.len();
        }
    }

    /// First steps in the new thread, on its own stack and TLS.
    ///
    /// # Safety
    /// Must be called by the thread whose block is at `tp`, first thing.
    pub(crate) unsafe fn enter(&self, tp: usize) {
        if self.rseq_len != 0 {
            let area = self.rseq_area(tp);
            // SAFETY: the area is inside this thread's TCB, which outlives it.
            if !unsafe { sys::rseq_register(area as *mut c_void, self.rseq_len) } {
                // SAFETY: as above.
                unsafe { *((area + RSEQ_CPU_ID) as *mut i32) = RSEQ_CPU_ID_REGISTRATION_FAILED };
            }
        }
        // The locale's ctype tables are per-thread TLS pointers that start
        // out null: isalpha() and friends would fault.
        // SAFETY: plain glibc initialiser for the calling thread.
        unsafe { (self.ctype_init)() };
    }

    /// Last steps in the thread, after its closure: what glibc's
    /// `start_thread` does before the thread's exit.
    ///
    /// # Safety
    /// Must be called by the thread whose block is at `tp`, once, last.
    pub(crate) unsafe fn leave(&self, tp: usize) {
        // thread_local! values with Drop (registered through
        // __cxa_thread_atexit_impl).
        // SAFETY: glibc's own exit path calls it the same way.
        unsafe { (self.call_tls_dtors)() };
        // SAFETY: we are that thread, and its keys are ours to run.
        unsafe { self.run_key_destructors(tp) };
        // SAFETY: our own TCB's slot, which write_header pointed at our
        // resolver state.
        let res = unsafe { *self.resp_slot(tp) };
        // SAFETY: our res_state; a non-zero nscount means res_ninit opened
        // sockets and allocated name-server addresses, which glibc's own
        // thread exit closes and frees the same way.
        if unsafe { *((res + RES_NSCOUNT) as *const i32) } != 0 {
            // SAFETY: as above; `true`: free the addresses too.
            unsafe { (self.res_iclose)(res as *mut c_void, true) };
        }
        // The rest of what glibc's thread clean-up frees, but malloc's
        // state, which is handed on: the buffers strerror and strsignal
        // made for unknown numbers, freed as glibc frees them ...
        for buf in [self.probed.strerror_buf, self.probed.strsignal_buf] {
            // SAFETY: our own TCB; the word holds null or a malloc'd string
            // nobody may use after the thread.
            unsafe { libc::free(std::mem::replace(&mut *at::<*mut c_void>(tp, buf), ptr::null_mut())) };
        }
        // ... and the last dlerror() message: a message not yet read is
        // marked read by the first call and freed by the next.
        // SAFETY: dlerror has no preconditions.
        while !unsafe { libc::dlerror() }.is_null() {}
    }

    /// pthread-key destructors, as glibc's `__nptl_deallocate_tsd` runs
    /// them: clear each value, call its key's destructor if the key is
    /// still the one the value was set for, repeat while destructors set
    /// new values (at most 4 rounds), then free the level-2 blocks.
    unsafe fn run_key_destructors(&self, tp: usize) {
        let specific = at::<[*mut KeyData; KEY_L1]>(tp, self.specific);
        for _ in 0..KEY_DESTRUCTOR_ROUNDS {
            let mut found = false;
            for l1 in 0..KEY_L1 {
                // SAFETY: reading our own TCB.
                let level2 = unsafe { (*specific)[l1] };
                if level2.is_null() {
                    continue;
                }
                for l2 in 0..KEY_L2 {
                    // SAFETY: level-2 blocks hold KEY_L2 records; glibc's
                    // key table holds KEY_L1 * KEY_L2 (checked at start-up).
                    unsafe {
                        let slot = &mut *level2.add(l2);
                        if slot.data.is_null() {
                            continue;
                        }
                        let data = std::mem::replace(&mut slot.data, ptr::null_mut());
                        found = true;
                        let key = &*self.keys.add(l1 * KEY_L2 + l2);
                        if slot.seq == key.seq
                            && let Some(destr) = key.destr
                        {
                            destr(data);
                        }
                    }
                }
            }
            if !found {
                break;
            }
        }
        // Block 0 is inside the TCB; the others came from glibc's calloc.
        for l1 in 1..KEY_L1 {
            // SAFETY: our own TCB; the blocks were malloc'd by glibc.
            unsafe {
                let level2 = std::mem::replace(&mut (*specific)[l1], ptr::null_mut());
                if !level2.is_null() {
                    libc::free(level2.cast());
                }
            }
        }
    }
}

/// Malloc states (see [`MallocState`]) of threads whose regions were
/// unmapped, for the next fresh regions. It holds at most one per thread
/// that was alive at once, since every fresh region takes one.
static MALLOC_STATES: Mutex<Vec<MallocState>> = Mutex::new(Vec::new());

/// [`MALLOC_STATES`], locked (a panic while it was held leaves plain words).
pub(crate) fn malloc_states() -> MutexGuard<'static, Vec<MallocState>> {
    MALLOC_STATES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A region whose glibc thread block is initialised. Dropping it frees the
/// DTV and dynamic TLS, keeps its malloc state for a later thread, and unmaps
/// the region: only do that once the thread is gone (its tid word reads 0)
/// or was never started.
pub(crate) struct Block {
    region: Region,
    glibc: &'static Glibc,
}

impl Block {
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn tid_word(&self) -> &AtomicI32 {
        self.glibc.tid_word(self.region.tp())
    }

    pub(crate) fn layout(&self) -> ThreadLayout {
        self.region.layout(self.glibc.tid)
    }

    /// The plan of this block's region for a thread with this guard, stack
    /// size and record, if they fit in it.
    pub(crate) fn replan(&self, guard: usize, stack: usize, record: Layout) -> Option<Plan> {
        self.region.replan(&self.glibc.geometry(), guard, stack, record)
    }

    /// Makes the block of a finished thread new for the next one, laid out
    /// by `plan` (from [`Block::replan`]): fresh TLS for every module, a
    /// zeroed TCB, the malloc state kept in place. On error the region is
    /// unmapped.
    pub(crate) fn renew(self, plan: Plan) -> io::Result<Block> {
        let this = ManuallyDrop::new(self);
        let glibc = this.glibc;
        let tp = this.region.tp();
        // SAFETY: the thread that used this block has exited (tid word 0);
        // its DTV and dynamic TLS are freed as glibc frees a cached stack's.
        let kept = unsafe {
            let kept = glibc.probed.read_malloc(tp);
            (glibc.deallocate_tls)(tp as *mut c_void, false);
            ptr::write_bytes(tp as *mut u8, 0, glibc.tcb_size);
            ptr::write_bytes(this.region.resolver() as *mut u8, 0, RES_STATE_SIZE);
            kept
        };
        // SAFETY: moved out of a ManuallyDrop that is not used again.
        let mut region = unsafe { ptr::read(&this.region) };
        region.refit(plan);
        // SAFETY: as in init_block: zeroed TCB, static TLS ours alone.
        if unsafe { (glibc.allocate_tls)(tp as *mut c_void) }.is_null() {
            // Keep the malloc state for a later thread, then unmap.
            malloc_states().push(kept);
            drop(region);
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: the block is ours alone until clone.
        unsafe {
            glibc.probed.write_malloc(tp, &kept);
            glibc.write_header(&region);
        }
        Ok(Block { region, glibc })
    }

    /// The last act of a detached thread that frees its own region: frees
    /// its DTV, leaves its malloc state for a later thread and unmaps the
    /// region it runs on. After the malloc state is handed over this thread
    /// must not allocate: the next owner may already use that cache.
    ///
    /// # Safety
    /// The caller is the thread this block belongs to, with every
    /// destructor already run, and nobody else owns the block.
    pub(crate) unsafe fn unmap_and_exit(self) -> ! {
        let this = ManuallyDrop::new(self);
        let glibc = this.glibc;
        let tp = this.region.tp();
        if glibc.rseq_len != 0 {
            sys::rseq_unregister(glibc.rseq_area(tp) as *mut c_void, glibc.rseq_len);
        }
        let mut states = malloc_states();
        // Allocate now, while this thread still owns its malloc cache.
        states.reserve(1);
        // SAFETY: our own block; from here on only static TLS is used.
        unsafe {
            (glibc.deallocate_tls)(tp as *mut c_void, false);
            states.push(glibc.probed.read_malloc(tp));
        }
        drop(states);
        // SAFETY: moved out of a ManuallyDrop that is not used again.
        let (base, len) = unsafe { ptr::read(&this.region) }.into_raw();
        // SAFETY: our own region, which nobody else owns.
        unsafe { sys::unmap_and_exit(base, len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let tp = self.region.tp();
        // SAFETY: the owner guarantees the thread is gone. glibc re-reads
        // the DTV from the TCB (the thread may have grown it) and frees it
        // with every dynamic TLS block; `false`: the TCB is not malloc'd.
        unsafe { (self.glibc.deallocate_tls)(tp as *mut c_void, false) };
        // SAFETY: as above.
        let state = unsafe { self.glibc.probed.read_malloc(tp) };
        if state != self.glibc.probed.malloc_fresh {
            malloc_states().push(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`find_malloc_state`] in a new pthread (whose malloc state is
    /// fresh), then, while it waits, [`check_malloc_state`] here on what it
    /// found with `keep` applied to it.
    fn check_in_pthread(keep: fn(&mut Probed)) -> bool {
        type Found = (usize, Result<(Probed, Freed), &'static str>);
        struct Shared {
            glibc: Glibc,
            found: Mutex<Option<Found>>,
            checked: Mutex<bool>,
        }
        extern "C" fn run(shared: *mut c_void) -> *mut c_void {
            // SAFETY: the test's `Shared`, alive until it joins us.
            let shared = unsafe { &*shared.cast::<Shared>() };
            *shared.found.lock().unwrap() = Some((current_tp(), find_malloc_state(&shared.glibc, current_tp())));
            while !*shared.checked.lock().unwrap() {
                std::hint::spin_loop();
            }
            ptr::null_mut()
        }
        let shared = Shared { glibc: discover().unwrap(), found: Mutex::new(None), checked: Mutex::new(false) };
        let mut thread: libc::pthread_t = 0;
        // SAFETY: default attributes; `shared` outlives the thread.
        let err = unsafe { libc::pthread_create(&mut thread, ptr::null(), run, (&raw const shared).cast_mut().cast()) };
        assert_eq!(err, 0);
        let (tp, found) = loop {
            if let Some(found) = shared.found.lock().unwrap().take() {
                break found;
            }
        };
        let (mut found, freed) = found.unwrap();
        keep(&mut found);
        let ok = check_malloc_state(&found, tp, freed);
        *shared.checked.lock().unwrap() = true;
        // SAFETY: our own thread, joined once.
        unsafe { libc::pthread_join(thread, ptr::null_mut()) };
        ok
    }

    /// The check passes on what was found, and fails on any part of it:
    /// a hand-over missing one word would leave a cache behind.
    #[test]
    fn malloc_check_refuses_a_partial_state() {
        assert!(check_in_pthread(|_| {}), "the state as found");
        assert!(!check_in_pthread(|f| f.malloc_words -= 1), "all words but the last");
        assert!(
            !check_in_pthread(|f| {
                f.malloc_below_tp.copy_within(1.., 0);
                f.malloc_words -= 1;
            }),
            "all words but the first"
        );
    }
}
