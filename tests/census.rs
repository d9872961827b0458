//! The twin census (`src/glibc/census.rs`), end to end, at the first spawn
//! of a fresh process:
//!
//! * it passes on this glibc, as it is, under the malloc tunables the
//!   other tests use, where its second thread may not be given its
//!   creator's scheduling explicitly (`sched_setattr` refused), and for a
//!   first spawn whose stack is beyond what the pool keeps;
//! * it refuses a glibc whose threads do something raw threads do not,
//!   naming the word: this binary defines its own `pthread_create` (which
//!   the linker binds the probe's calls to), and in the cases that ask for
//!   it, wraps each new pthread's start routine so that the thread does one
//!   thing more at its start, or at its exit, as a new glibc might.
//!
//! No test harness: libtest would start pthreads of its own, and each case
//! runs in a child copy of this binary, as a first spawn must.

use std::ffi::{c_int, c_void};
use std::process::Command;

mod common;

use common::{StartRoutine, glibc_pthread_create};

const CHILD: &str = "RAWTHREAD_CENSUS_CHILD";

/// What a wrapped pthread is started with.
#[derive(Clone, Copy)]
struct Wrapped {
    start: StartRoutine,
    arg: *mut c_void,
    case: Case,
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// Each pthread stores a value under a pthread key first thing: a
    /// word of `struct pthread` a raw thread does not have at its start.
    AtStart,
    /// Each pthread switches to the "C" locale object after its start
    /// routine: a word of libc's TLS that a pthread's exit changes and a
    /// raw thread's does not.
    AtExit,
}

fn case() -> Option<Case> {
    // SAFETY: getenv with a NUL-terminated name; the value is read at once.
    let value = unsafe { libc::getenv(c"RAWTHREAD_CENSUS_CHILD".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
        b"at_start" => Some(Case::AtStart),
        b"at_exit" => Some(Case::AtExit),
        _ => None,
    }
}

/// The key each pthread sets at its start in the case [`Case::AtStart`],
/// made by the first `pthread_create` (in its caller: nothing of the new
/// thread's may allocate before its start routine, which is the probe).
static KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();

extern "C" fn wrapped(wrapped: *mut c_void) -> *mut c_void {
    // SAFETY: the box made by pthread_create below, ours alone; freed only
    // after the start routine (a free would make malloc's cache now).
    let Wrapped { start, arg, case } = *unsafe { &*wrapped.cast::<Wrapped>() };
    if case == Case::AtStart {
        // SAFETY: a key made by pthread_create below; any value.
        unsafe { libc::pthread_setspecific(KEY.get().copied().unwrap(), std::ptr::dangling::<u8>().cast()) };
    }
    let result = start(arg);
    if case == Case::AtExit {
        // SAFETY: the "C" locale object glibc keeps, set for this thread.
        unsafe { libc::uselocale(libc::newlocale(libc::LC_ALL_MASK, c"C".as_ptr(), std::ptr::null_mut())) };
    }
    // SAFETY: as above.
    drop(unsafe { Box::from_raw(wrapped.cast::<Wrapped>()) });
    result
}

/// # Safety
/// The same contract as glibc's `pthread_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let real = glibc_pthread_create();
    match case() {
        // SAFETY: forwarded unchanged from our caller.
        None => unsafe { real(thread, attr, start, arg) },
        Some(case) => {
            KEY.get_or_init(|| {
                let mut key = 0;
                // SAFETY: a key without destructor.
                assert_eq!(unsafe { libc::pthread_key_create(&mut key, None) }, 0);
                key
            });
            let boxed = Box::into_raw(Box::new(Wrapped { start, arg, case }));
            // SAFETY: our caller's thread and attributes; the box is the
            // wrapper's, freed by it (or here, if no thread was made).
            let err = unsafe { real(thread, attr, wrapped, boxed.cast()) };
            if err != 0 {
                // SAFETY: no thread took it.
                drop(unsafe { Box::from_raw(boxed) });
            }
            err
        }
    }
}

/// The child: one first spawn, and what came of it.
fn child() {
    if std::env::var_os(CHILD).is_some_and(|c| c == "sched_refused") {
        // As where the creator runs a real-time policy it may not give:
        // the census's second thread then inherits its scheduling.
        common::refuse_syscalls(&[(libc::SYS_sched_setattr, libc::EPERM)]);
    }
    if std::env::var_os(CHILD).is_some_and(|c| c == "malloc_tuning") {
        let before = mapped_by_malloc(MAPPED);
        let spawned = rawthread::spawn(|| 6 * 7).join().unwrap();
        println!("spawned: {spawned}; {MAPPED} bytes mapped: before {before}, after {}", mapped_by_malloc(MAPPED));
        return;
    }
    // A first spawn with its own stack size (MiB), where asked.
    let builder = match std::env::var("RAWTHREAD_CENSUS_STACK_MIB") {
        Ok(mib) => rawthread::Builder::new().stack_size(mib.parse::<usize>().unwrap() << 20),
        Err(_) => rawthread::Builder::new(),
    };
    match builder.spawn(|| 6 * 7).map(|h| h.join().unwrap()) {
        Ok(v) => println!("spawned: {v}"),
        Err(e) => println!("refused: {:?}: {e}", e.kind()),
    }
}

/// A size above glibc's initial mmap threshold (128 KiB), which a free of
/// a larger mapped chunk would raise for the whole process; half a page
/// past a page boundary.
const MAPPED: usize = 150 << 10;

/// Whether glibc's malloc serves [`MAPPED`] bytes with a mapping of their
/// own: its pages are then usable to their end but for malloc's
/// bookkeeping (16 bytes in glibc 2.36, 24 in 2.43), some 2 KiB more than
/// asked, where a chunk of an arena has less than a minimal chunk (32
/// bytes) more. The chunk is never freed (a free of a
/// mapped chunk raises the threshold).
fn mapped_by_malloc(size: usize) -> bool {
    // SAFETY: a chunk of ours, asked its usable size, and kept.
    let usable = unsafe { libc::malloc_usable_size(std::hint::black_box(libc::malloc(size))) };
    usable >= size + 1024
}

/// Runs `case` in a child copy of this binary with `env`, and returns what
/// it printed; it must exit 0.
fn run(case: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, case)
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{case}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    for tunables in [
        "",
        "glibc.malloc.arena_max=1",
        "glibc.malloc.tcache_count=0",
        "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1",
    ] {
        let out = run("plain", &[("GLIBC_TUNABLES", tunables)]);
        assert_eq!(out, "spawned: 42\n", "with GLIBC_TUNABLES={tunables:?}");
    }
    assert_eq!(run("sched_refused", &[]), "spawned: 42\n", "with sched_setattr refused");
    // A first spawn whose stack is beyond what the pool keeps: the census's
    // threads take a room of their own, still reused.
    assert_eq!(run("plain", &[("RAWTHREAD_CENSUS_STACK_MIB", "64")]), "spawned: 42\n", "with a 64 MiB first spawn");
    // The census leaves malloc's tuning as it was: what was served by a
    // mapping of its own still is.
    let out = run("malloc_tuning", &[]);
    assert_eq!(out, format!("spawned: 42; {MAPPED} bytes mapped: before true, after true\n"));
    let out = run("at_start", &[]);
    assert!(out.starts_with("refused: Unsupported: rawthread: twin census: C: struct pthread + "), "{out}");
    assert!(out.contains("at entry"), "{out}");
    let out = run("at_exit", &[]);
    assert!(out.starts_with("refused: Unsupported: rawthread: twin census: X: libc's TLS + "), "{out}");
    assert!(out.contains("the pthread's exit changes it"), "{out}");
    println!(
        "census: passes as it is, under 3 malloc tunables, where an explicit scheduling is refused and for a \
         64 MiB first spawn, leaving malloc's tuning as it was; refuses a new duty at start and one at exit"
    );
    println!("1 passed, 0 failed");
}
