//! The variants: one function each. Every one reads the clock just before the
//! spawn call (t0), when it returns (t1) and when the child has been joined or
//! reaped (t2); the child stamps the clock first thing.

use std::ffi::{c_char, c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use rawthread::bench::{KernelFloor, Phase, now_ns};

use crate::PAGE;
use crate::mapping::Mapping;
use crate::progress::Progress;
use crate::stats::{Figure, Sample, Stats, cpu_ns};

/// What the variants need beyond their code, made once.
pub(crate) struct Ctx {
    /// The kernel floors' reusable stacks and tid words: the bare one, and
    /// the one with a glibc thread's kernel duties.
    floor: KernelFloor,
    floor_duties: KernelFloor,
    /// A `MAP_SHARED` page: a process child's stamp lands in the very page
    /// the parent reads, not in a copy-on-write copy of it.
    shared: Mapping,
    /// The stack of the vfork child, who runs while we are suspended.
    vfork_stack: Mapping,
}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        Ctx {
            floor: KernelFloor::new().expect("KernelFloor::new"),
            floor_duties: KernelFloor::with_thread_duties().expect("KernelFloor::with_thread_duties"),
            shared: Mapping::new(PAGE, libc::MAP_SHARED),
            vfork_stack: Mapping::new(64 << 10, libc::MAP_PRIVATE | libc::MAP_STACK),
        }
    }
}

/// Where thread children stamp: threads share our address space, so a
/// plain static will do.
static THREAD_STAMP: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Group {
    Thread,
    Process,
    /// Also runs a new program: not comparable with the others.
    Exec,
}

pub(crate) struct Variant {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) group: Group,
    pub(crate) note: &'static str,
    pub(crate) run: fn(&mut Ctx) -> Sample,
}

/// The variants the others are compared with, by position in `VARIANTS`.
pub(crate) const RAWTHREAD: usize = 0;
pub(crate) const RAWTHREAD_SLEEP: usize = 2;
pub(crate) const FLOOR: usize = 3;
pub(crate) const FLOOR_DUTIES: usize = 4;
pub(crate) const STD: usize = 5;
pub(crate) const PTHREAD: usize = 6;
const _: () = assert!(matches!(VARIANTS[RAWTHREAD].label.as_bytes(), b"rawthread::spawn + join"));
const _: () = assert!(matches!(VARIANTS[RAWTHREAD_SLEEP].label.as_bytes(), b"rawthread, sleep-at-once join"));
const _: () = assert!(matches!(VARIANTS[FLOOR].label.as_bytes(), b"kernel floor (bare clone)"));
const _: () = assert!(matches!(VARIANTS[FLOOR_DUTIES].label.as_bytes(), b"kernel floor (+TLS, rseq, robust)"));
const _: () = assert!(matches!(VARIANTS[STD].label.as_bytes(), b"std::thread::spawn + join"));
const _: () = assert!(matches!(VARIANTS[PTHREAD].label.as_bytes(), b"pthread_create + pthread_join"));

/// The thread variants measured again under load, and the ones whose
/// phases are stamped.
pub(crate) const LOADED: [usize; 6] = [RAWTHREAD, RAWTHREAD_SLEEP, FLOOR, FLOOR_DUTIES, STD, PTHREAD];

pub(crate) const VARIANTS: [Variant; 12] = [
    Variant {
        id: "rawthread",
        label: "rawthread::spawn + join",
        group: Group::Thread,
        note: "default Builder: 2 MiB stack; regions of joined threads are reused from rawthread's pool; \
               join sleeps on the tid word at once, as pthread_join",
        run: rawthread_default,
    },
    Variant {
        id: "rawthread_64k",
        label: "rawthread, 64 KiB stack",
        group: Group::Thread,
        note: "Builder::new().stack_size(64 << 10)",
        run: rawthread_64k,
    },
    Variant {
        id: "rawthread_sleep",
        label: "rawthread, sleep-at-once join",
        group: Group::Thread,
        note: "rawthread::spawn, then the benchmark itself sleeps at once on the handle's tid word (shared \
               FUTEX_WAIT, no spin) until the kernel clears it, then join() (which returns at once): \
               the same policy as rawthread's join, written out by the benchmark: a check on it",
        run: rawthread_sleep,
    },
    Variant {
        id: "kernel_floor",
        label: "kernel floor (bare clone)",
        group: Group::Thread,
        note: "rawthread::bench::KernelFloor: one clone with thread flags on a reused stack, no TLS, no thread block, \
               rawthread's join (a futex sleep at once, as pthread_join): what the kernel alone charges for a thread",
        run: kernel_floor,
    },
    Variant {
        id: "kernel_floor_duties",
        label: "kernel floor (+TLS, rseq, robust)",
        group: Group::Thread,
        note: "rawthread::bench::KernelFloor::with_thread_duties: the bare floor plus what the kernel must do for any \
               glibc thread: CLONE_SETTLS with a thread block, rseq registration of a 32-byte area and \
               set_robust_list (an empty list, read by the kernel at exit) in the child; still no signal masking \
               and no glibc bookkeeping: the least a real thread must cost",
        run: kernel_floor_duties,
    },
    Variant {
        id: "std_thread",
        label: "std::thread::spawn + join",
        group: Group::Thread,
        note: "pthread_create underneath, 2 MiB stack, plus std's own bookkeeping",
        run: std_thread,
    },
    Variant {
        id: "pthread",
        label: "pthread_create + pthread_join",
        group: Group::Thread,
        note: "libc, default attributes: the stack is RLIMIT_STACK-sized, from glibc's stack cache",
        run: pthread,
    },
    Variant {
        id: "fork",
        label: "fork + waitpid",
        group: Group::Process,
        note: "glibc fork(): atfork handlers and libc locks around clone; the child stamps and _exit(0)s",
        run: fork,
    },
    Variant {
        id: "vfork",
        label: "vfork (clone CLONE_VM|CLONE_VFORK)",
        group: Group::Process,
        note: "libc::clone(CLONE_VM|CLONE_VFORK|SIGCHLD) on a pre-made stack, the kernel path of vfork() \
               and of posix_spawn; vfork() itself cannot be called soundly from Rust (it returns twice \
               on one shared stack)",
        run: vfork,
    },
    Variant {
        id: "clone_sigchld",
        label: "clone(SIGCHLD) + waitpid",
        group: Group::Process,
        note: "the raw clone syscall as fork does it, without glibc's fork bookkeeping",
        run: clone_sigchld,
    },
    Variant {
        id: "clone3_pidfd",
        label: "clone3 + CLONE_PIDFD, pidfd wait",
        group: Group::Process,
        note: "rawthread::process::spawn(..) then Child::wait(): waitid(P_PIDFD)",
        run: clone3_pidfd,
    },
    Variant {
        id: "posix_spawn",
        label: "posix_spawn /bin/true + waitpid",
        group: Group::Exec,
        note: "includes exec and the whole run of /bin/true: reported apart; no child stamp, so no (b)",
        run: posix_spawn,
    },
];

/// Times one thread: `spawn` starts it (its body calls [`stamp`] first),
/// `join` waits for it.
/// The phase stamps, recorded only in samples that the phase part arms,
/// cost the others one relaxed load each.
fn time_thread<H>(spawn: impl FnOnce() -> H, join: impl FnOnce(H)) -> Sample {
    THREAD_STAMP.store(0, Ordering::Relaxed);
    rawthread::bench::stamp(Phase::Call);
    let t0 = now_ns();
    let handle = spawn();
    let t1 = now_ns();
    rawthread::bench::stamp(Phase::Returned);
    join(handle);
    let t2 = now_ns();
    rawthread::bench::stamp(Phase::Joined);
    Sample::new(t0, t1, t2, Some(THREAD_STAMP.load(Ordering::Acquire)))
}

/// The body of the rawthread variants, whose closure boundaries rawthread
/// stamps itself.
fn stamp() {
    THREAD_STAMP.store(now_ns(), Ordering::Release);
}

/// The body of the pthread and std variants: the same, between the
/// closure's phase stamps.
fn stamp_marked() {
    rawthread::bench::stamp(Phase::ClosureStart);
    THREAD_STAMP.store(now_ns(), Ordering::Release);
    rawthread::bench::stamp(Phase::ClosureEnd);
}

/// The spawn of the two variants that differ only in their join: one
/// function, not inlined, so that both run the same machine code up to the
/// join (inlined into each, the same source measured 1-2% apart).
#[inline(never)]
fn rawthread_spawn() -> rawthread::JoinHandle<()> {
    rawthread::spawn(stamp)
}

pub(crate) fn rawthread_default(_: &mut Ctx) -> Sample {
    time_thread(rawthread_spawn, |h| h.join().expect("rawthread child panicked"))
}

fn rawthread_64k(_: &mut Ctx) -> Sample {
    time_thread(
        || rawthread::Builder::new().stack_size(64 << 10).spawn(stamp).expect("rawthread spawn"),
        |h| h.join().expect("rawthread child panicked"),
    )
}

fn rawthread_sleep(_: &mut Ctx) -> Sample {
    time_thread(rawthread_spawn, |h| {
        // SAFETY: the exit word is an aligned i32 in the TCB of the
        // region the handle owns, mapped until the handle is joined
        // below; only the kernel clears it.
        let word = unsafe { &*(h.layout().exit_word as *const AtomicI32) };
        sleep_until_zero(word);
        rawthread::bench::stamp(Phase::Woken);
        h.join().expect("rawthread child panicked")
    })
}

/// A plain join: a shared futex wait at once (the kernel's wake at a
/// thread's exit is shared), looked at again after every wake-up.
pub(crate) fn sleep_until_zero(word: &AtomicI32) {
    loop {
        let tid = word.load(Ordering::Acquire);
        if tid == 0 {
            return;
        }
        // SAFETY: a valid, aligned i32 for the duration of the call; a
        // null timeout sleeps until a wake (or a signal: we look again).
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, tid, ptr::null::<libc::timespec>()) };
    }
}

fn kernel_floor(ctx: &mut Ctx) -> Sample {
    time_floor(&mut ctx.floor)
}

fn kernel_floor_duties(ctx: &mut Ctx) -> Sample {
    time_floor(&mut ctx.floor_duties)
}

fn time_floor(floor: &mut KernelFloor) -> Sample {
    time_thread(
        || {
            // SAFETY: the benchmark sends no signal, and the floor thread
            // does not fault, so no handler runs on its borrowed or absent
            // TLS.
            unsafe { floor.spawn(&THREAD_STAMP) }.expect("kernel floor clone");
            floor
        },
        |floor| floor.join(),
    )
}

fn std_thread(_: &mut Ctx) -> Sample {
    time_thread(|| std::thread::spawn(stamp_marked), |h| h.join().expect("std child panicked"))
}

extern "C" fn pthread_child(_: *mut c_void) -> *mut c_void {
    stamp_marked();
    ptr::null_mut()
}

fn pthread(_: &mut Ctx) -> Sample {
    time_thread(
        || {
            let mut thread: libc::pthread_t = 0;
            // SAFETY: default attributes (null); pthread_child is a valid
            // start routine that touches only a static.
            let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), pthread_child, ptr::null_mut()) };
            assert_eq!(rc, 0, "pthread_create: {}", io::Error::from_raw_os_error(rc));
            thread
        },
        |thread| {
            // SAFETY: a joinable thread we created and join once.
            let rc = unsafe { libc::pthread_join(thread, ptr::null_mut()) };
            assert_eq!(rc, 0, "pthread_join: {}", io::Error::from_raw_os_error(rc));
        },
    )
}

/// The child side of every process variant: stamp and leave at once.
/// `_exit`, not `exit`: no atexit handlers, no flushing of stdio buffers
/// inherited from the parent.
fn stamp_and_exit(stamp: &AtomicU64) -> ! {
    stamp.store(now_ns(), Ordering::Release);
    // SAFETY: ends this process only; it touches nothing it shares with
    // the parent.
    unsafe { libc::_exit(0) }
}

/// Reaps `pid` and checks that it exited with 0.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waiting for a child of ours, into a valid int.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "waitpid({pid}): {e}");
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid} failed: status {status:#x}");
}

/// Times one process made by `make`, which returns the child's pid in the
/// parent and, for the fork-like makers that return twice, 0 in the child,
/// which then stamps and leaves. `what` names the call in errors.
fn time_process(ctx: &mut Ctx, what: &str, make: impl FnOnce(&AtomicU64) -> libc::pid_t) -> Sample {
    let stamp = ctx.shared.stamp();
    stamp.store(0, Ordering::Relaxed);
    let t0 = now_ns();
    let pid = make(stamp);
    if pid == 0 {
        stamp_and_exit(stamp);
    }
    let t1 = now_ns();
    assert!(pid > 0, "{what}: {}", io::Error::last_os_error());
    reap(pid);
    let t2 = now_ns();
    Sample::new(t0, t1, t2, Some(stamp.load(Ordering::Acquire)))
}

pub(crate) fn fork(ctx: &mut Ctx) -> Sample {
    // SAFETY: the child runs on its own copy of our memory and does only
    // async-signal-safe things (a clock read, an atomic store, _exit), as a
    // child of a possibly multi-threaded process must.
    time_process(ctx, "fork", |_| unsafe { libc::fork() })
}

/// The vfork child, on `Ctx::vfork_stack`, in our address space.
extern "C" fn vfork_child(stamp: *mut c_void) -> c_int {
    // SAFETY: the parent's shared stamp, alive while the parent is
    // suspended waiting for us.
    stamp_and_exit(unsafe { &*stamp.cast::<AtomicU64>() })
}

fn vfork(ctx: &mut Ctx) -> Sample {
    let stack_top = ctx.vfork_stack.end();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: the child runs on a stack of its own that nobody else uses,
    // and CLONE_VFORK keeps us suspended until it has exited, so nothing it
    // touches in our shared memory (the stamp, our TLS) is touched by us
    // meanwhile. It returns to no frame of ours: it ends with _exit. (A
    // signal handler would run in it on our TLS; posix_spawn blocks signals
    // for that, and this benchmark installs no handler that could fire.)
    time_process(ctx, "clone(CLONE_VM|CLONE_VFORK)", |stamp| unsafe {
        libc::clone(vfork_child, stack_top, flags, ptr::from_ref(stamp).cast_mut().cast())
    })
}

fn clone_sigchld(ctx: &mut Ctx) -> Sample {
    // clone(flags, stack, parent_tid, child_tid, tls): all longs, as the
    // variadic syscall() reads them.
    let (flags, none): (libc::c_long, libc::c_long) = (libc::SIGCHLD.into(), 0);
    // SAFETY: like fork: without CLONE_VM the child returns here on its own
    // copy of our memory and stack (stack 0: the same stack pointer), then
    // stamps and _exits. glibc's record of our tid is stale in the child,
    // which never consults it.
    time_process(ctx, "clone(SIGCHLD)", |_| unsafe {
        libc::syscall(libc::SYS_clone, flags, none, none, none, none) as libc::pid_t
    })
}

fn clone3_pidfd(ctx: &mut Ctx) -> Sample {
    let stamp = ctx.shared.stamp();
    stamp.store(0, Ordering::Relaxed);
    let t0 = now_ns();
    let mut child = rawthread::process::spawn(|| {
        stamp.store(now_ns(), Ordering::Release);
        0
    })
    .expect("rawthread::process::spawn");
    let t1 = now_ns();
    let status = child.wait().expect("Child::wait");
    let t2 = now_ns();
    assert!(status.success(), "clone3 child failed: {status}");
    Sample::new(t0, t1, t2, Some(stamp.load(Ordering::Acquire)))
}

fn posix_spawn(_: &mut Ctx) -> Sample {
    let argv = [c"true".as_ptr().cast_mut(), ptr::null_mut()];
    let envp: [*mut c_char; 1] = [ptr::null_mut()];
    let mut pid = 0;
    let t0 = now_ns();
    // SAFETY: NUL-terminated path, NULL-terminated argv and (empty) envp,
    // default file actions and attributes.
    let rc = unsafe {
        libc::posix_spawn(&mut pid, c"/bin/true".as_ptr(), ptr::null(), ptr::null(), argv.as_ptr(), envp.as_ptr())
    };
    let t1 = now_ns();
    assert_eq!(rc, 0, "posix_spawn /bin/true: {}", io::Error::from_raw_os_error(rc));
    reap(pid);
    let t2 = now_ns();
    Sample::new(t0, t1, t2, None)
}

// ---------------------------------------------------------------------------
// Part 1 (and 4): latency, interleaved
// ---------------------------------------------------------------------------

/// The samples of some variants, measured together, and the CPU they took.
pub(crate) struct Section {
    /// Indices into `VARIANTS`, in the order of `samples` and `cpu_ns`.
    pub(crate) variants: Vec<usize>,
    pub(crate) samples: Vec<Vec<Sample>>,
    /// User + system CPU time of the whole process over each block of
    /// each variant's samples (getrusage around the block), and for
    /// processes that of the reaped children too, ns: one per round.
    pub(crate) cpu_ns: Vec<Vec<u64>>,
}

impl Section {
    fn position(&self, variant: usize) -> Option<usize> {
        self.variants.iter().position(|&v| v == variant)
    }

    /// The samples of `VARIANTS[variant]`; empty if it was not measured.
    pub(crate) fn of(&self, variant: usize) -> &[Sample] {
        self.position(variant).map_or(&[], |i| &self.samples[i])
    }

    /// CPU time per spawn+join of `VARIANTS[variant]`, ns.
    pub(crate) fn cpu_per_op(&self, variant: usize) -> Option<f64> {
        let i = self.position(variant)?;
        (!self.samples[i].is_empty()).then(|| self.cpu_ns[i].iter().sum::<u64>() as f64 / self.samples[i].len() as f64)
    }

    /// The CPU time of each block of `VARIANTS[variant]`, round by round.
    pub(crate) fn block_cpu(&self, variant: usize) -> &[u64] {
        self.position(variant).map_or(&[], |i| &self.cpu_ns[i])
    }

    /// `(variant index, samples)`, in `VARIANTS` order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (usize, &[Sample])> {
        let mut order: Vec<usize> = (0..self.variants.len()).collect();
        order.sort_by_key(|&i| self.variants[i]);
        order.into_iter().map(|i| (self.variants[i], self.samples[i].as_slice()))
    }
}

/// Samples of every variant in `which`, in the order taken: sample
/// `r * block + i` is the `i`th of round `r`.
pub(crate) fn measure_latency(
    ctx: &mut Ctx,
    which: &[usize],
    rounds: usize,
    block: usize,
    what: &str,
    progress: &Progress,
) -> Section {
    let mut samples: Vec<Vec<Sample>> = which.iter().map(|_| Vec::with_capacity(rounds * block)).collect();
    let mut cpu: Vec<Vec<u64>> = which.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        progress.show(format_args!("{what}: round {}/{rounds}", round + 1));
        // A new order each round, so that what a variant leaves behind
        // (fork's write-protected pages, an exec's cold caches) falls on a
        // different successor each time (a rotation would keep every
        // variant's predecessor), and one unrecorded sample first in each
        // block, which takes what is left of it.
        for i in shuffled(which.len(), round) {
            let variant = &VARIANTS[which[i]];
            let children = variant.group != Group::Thread;
            (variant.run)(ctx);
            let before = cpu_ns(children);
            for _ in 0..block {
                samples[i].push((variant.run)(ctx));
            }
            cpu[i].push(cpu_ns(children) - before);
        }
    }
    Section { variants: which.to_vec(), samples, cpu_ns: cpu }
}

/// `0..n` in an order of its own for each `round`: a Fisher-Yates shuffle
/// driven by xorshift, seeded by the round (the same orders every run).
fn shuffled(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = (round as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// The median of each round's block, for per-round ratios.
pub(crate) fn block_medians(samples: &[Sample], block: usize) -> Vec<u64> {
    samples.chunks(block).filter_map(|c| Stats::figure(c, Figure::RoundTrip)).map(|s| s.median).collect()
}

// ---------------------------------------------------------------------------
// Part 5: phases
// ---------------------------------------------------------------------------

/// The stamps of one armed spawn+join, by `Phase as usize`.
pub(crate) type Stamps = [Option<u64>; Phase::COUNT];

/// Armed samples of each variant in `which`, interleaved like the latency
/// part: `rounds` rounds of `block` in a row each.
pub(crate) fn measure_phases(
    ctx: &mut Ctx,
    which: &[usize],
    rounds: usize,
    block: usize,
    progress: &Progress,
) -> Vec<Vec<Stamps>> {
    let mut out: Vec<Vec<Stamps>> = which.iter().map(|_| Vec::with_capacity(rounds * block)).collect();
    for round in 0..rounds {
        progress.show(format_args!("phases: round {}/{rounds}", round + 1));
        for i in shuffled(which.len(), round) {
            (VARIANTS[which[i]].run)(ctx);
            for _ in 0..block {
                rawthread::bench::arm();
                (VARIANTS[which[i]].run)(ctx);
                out[i].push(rawthread::bench::disarm());
            }
        }
    }
    out
}
