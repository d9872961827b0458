//! The rawthread API itself: `Builder` (names, stack and guard sizes,
//! errors), `JoinHandle` (`join`, `is_finished`, `tid`), detached threads,
//! `uses_clone3` and the legacy-`clone` fallback, and what a thread leaves
//! behind.
//!
//! Tests that must crash, change process-wide state (seccomp filters) or
//! count the process's mappings run in a child process: this binary run
//! again with one test selected and `RAWTHREAD_CHILD` set.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

use rawthread::Builder;

mod common;

use common::{
    Guard, NO_GUARD_MARKERS, assert_child_passed, drain_pool, enter_guard_path, gettid, guard_at, in_child,
    malloc_in_use, maps as mapping_count, markers_installable, page_size, protection_at, quiet_expected_panics,
    refuse_syscalls, run_child,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A thread's name as the kernel shows it, without the newline.
fn comm_of(tid: libc::pid_t) -> Vec<u8> {
    let mut comm = std::fs::read(format!("/proc/self/task/{tid}/comm")).expect("read comm");
    assert_eq!(comm.pop(), Some(b'\n'));
    comm
}

/// Recurses `depth` frames, each with a 1 KiB array on the stack; returns a
/// sum that depends on every frame, and the deepest frame's address.
#[inline(never)]
fn deep(depth: usize) -> (u64, usize) {
    let mut frame = [0u8; 1024];
    frame[depth % 1024] = depth as u8;
    let frame = black_box(&mut frame);
    if depth == 0 {
        return (0, frame.as_ptr() as usize);
    }
    let (sum, deepest) = deep(depth - 1);
    (sum + u64::from(frame[depth % 1024]), deepest)
}

/// About 12-15 MiB of stack: far more than the 2 MiB default.
const DEEP: usize = 12_000;

/// Runs [`deep`] to [`DEEP`] and returns the stack span it used.
fn recurse_deep() -> usize {
    // A local, not `&0u8`, which would be promoted to a static.
    let marker = 0u8;
    let top = black_box(&marker) as *const u8 as usize;
    let (sum, deepest) = deep(DEEP);
    assert_eq!(sum, (1..=DEEP).map(|d| u64::from(d as u8)).sum::<u64>());
    top - deepest
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

#[test]
fn name_visible_in_proc_comm_inside_and_outside() {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let h = Builder::new()
        .name("worker-7".into())
        .spawn(move || {
            let own = comm_of(gettid());
            let thread_self = std::fs::read("/proc/thread-self/comm").unwrap();
            ready_tx.send((own, thread_self)).unwrap();
            // Stay alive until the spawner has looked.
            release_rx.recv().unwrap();
            7
        })
        .unwrap();
    let (own, thread_self) = ready_rx.recv().unwrap();
    assert_eq!(own, b"worker-7");
    assert_eq!(thread_self, b"worker-7\n");
    assert_eq!(comm_of(h.tid()), b"worker-7", "seen from the spawner");
    release_tx.send(()).unwrap();
    assert_eq!(h.join().unwrap(), 7);
}

#[test]
fn unnamed_thread_keeps_the_spawners_comm() {
    // As with std::thread, an unnamed thread inherits its creator's comm.
    let spawner = comm_of(gettid());
    let inside = rawthread::spawn(|| comm_of(gettid())).join().unwrap();
    assert_eq!(inside, spawner);
}

#[test]
fn long_names_are_truncated_to_15_bytes() {
    for name in ["exactly-15-byte", "a-thread-name-longer-than-fifteen-bytes", "ééééééééé"] {
        let comm = Builder::new().name(name.into()).spawn(|| comm_of(gettid())).unwrap().join().unwrap();
        // The kernel keeps the first 15 bytes, even mid-character.
        assert_eq!(comm, &name.as_bytes()[..name.len().min(15)], "{name}");
    }
}

/// The panic message of a spawn by `spawn`, which must panic.
fn spawn_panic(spawn: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(spawn).expect_err("the spawn did not panic");
    payload.downcast_ref::<String>().cloned().expect("a formatted panic message")
}

#[test]
fn name_with_nul_panics_as_std_and_leaks_nothing() {
    let witness = Arc::new(());
    let ran = Arc::new(AtomicBool::new(false));
    let (w, r) = (witness.clone(), ran.clone());
    let ours = spawn_panic(move || {
        let _ = Builder::new().name("bad\0name".into()).spawn(move || {
            r.store(true, Ordering::SeqCst);
            drop(w);
        });
    });
    let stds = spawn_panic(|| {
        let _ = thread::Builder::new().name("bad\0name".into()).spawn(|| ());
    });
    assert_eq!(ours, stds);
    assert_eq!(Arc::strong_count(&witness), 1, "the closure was leaked");
    assert!(!ran.load(Ordering::SeqCst), "the closure ran");
    let scoped = spawn_panic(|| {
        rawthread::scope(|s| {
            let _ = Builder::new().name("bad\0name".into()).spawn_scoped(s, || ());
        })
    });
    assert_eq!(scoped, stds);
    // Nothing half-made gets in the way of the next spawn.
    assert_eq!(
        Builder::new().name("good-name".into()).spawn(|| comm_of(gettid())).unwrap().join().unwrap(),
        b"good-name"
    );
}

/// std's `Thread` of a named raw thread has its name: inside, through the
/// handle, in a scoped thread, whole (not the kernel's 15 bytes); an
/// unnamed one has none, as std's.
#[test]
fn std_reads_the_name_of_a_named_raw_thread() {
    for name in ["w", "worker-7", "a-thread-name-longer-than-fifteen-bytes", "ééééééééé", &"long ".repeat(200)]
    {
        let handle = Builder::new().name(name.into()).spawn(|| thread::current().name().map(str::to_owned)).unwrap();
        assert_eq!(handle.thread().name(), Some(name));
        assert!(format!("{:?}", handle.thread()).contains(&format!("{name:?}")));
        assert_eq!(handle.join().unwrap().as_deref(), Some(name));
    }
    let unnamed = rawthread::spawn(|| thread::current().name().is_none());
    assert_eq!(unnamed.thread().name(), None);
    assert!(unnamed.join().unwrap());
    rawthread::scope(|s| {
        let h = Builder::new().name("scoped".into()).spawn_scoped(s, || thread::current().name().map(str::to_owned));
        let h = h.unwrap();
        assert_eq!(h.thread().name(), Some("scoped"));
        assert_eq!(h.join().unwrap().as_deref(), Some("scoped"));
    });
}

/// The name is still there in the thread's TLS destructors, of a detached
/// thread too.
#[test]
fn the_name_is_read_in_tls_destructors() {
    struct SendName(mpsc::Sender<Option<String>>);
    impl Drop for SendName {
        fn drop(&mut self) {
            self.0.send(thread::current().name().map(str::to_owned)).unwrap();
        }
    }
    thread_local!(static SENDER: std::cell::RefCell<Option<SendName>> = const { std::cell::RefCell::new(None) });
    let (tx, rx) = mpsc::channel();
    let handle = Builder::new()
        .name("in-destructor".into())
        .spawn(move || SENDER.with(|s| *s.borrow_mut() = Some(SendName(tx))))
        .unwrap();
    drop(handle);
    assert_eq!(rx.recv().unwrap().as_deref(), Some("in-destructor"));
}

/// std's default panic hook names a named raw thread, and says
/// `<unnamed>` for an unnamed one, as for std's threads.
#[test]
fn a_panic_in_a_named_raw_thread_names_it() {
    if in_child("a_panic_in_a_named_raw_thread_names_it") {
        let named = Builder::new().name("worker-7".into()).spawn(|| panic!("{}: named", common::EXPECTED));
        assert!(named.unwrap().join().is_err());
        let unnamed = rawthread::spawn(|| panic!("{}: unnamed", common::EXPECTED));
        assert!(unnamed.join().is_err());
        return;
    }
    let out = run_child("a_panic_in_a_named_raw_thread_names_it", &[("RUST_BACKTRACE", "0")]);
    assert_child_passed(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = |name: &str, what: &str| {
        stderr.lines().any(|l| l.starts_with(&format!("thread '{name}'")) && l.contains("panicked"))
            && stderr.contains(&format!("{}: {what}", common::EXPECTED))
    };
    assert!(said("worker-7", "named"), "{stderr}");
    assert!(said("<unnamed>", "unnamed"), "{stderr}");
}

/// std frees a raw thread's name with its `Thread`, as it frees its own
/// threads' names: thousands of named threads leave malloc as it was (a
/// name kept would add 1 MB; one freed twice would abort).
#[test]
fn names_are_freed_with_their_threads() {
    if in_child("names_are_freed_with_their_threads") {
        warm_up_malloc_arenas();
        let name = "n".repeat(500);
        let heap = malloc_in_use();
        for _ in 0..2_000 {
            let handle = Builder::new().name(name.clone()).spawn(|| thread::current().name().map(str::len)).unwrap();
            assert_eq!(handle.join().unwrap(), Some(500));
        }
        let heap_after = malloc_in_use();
        println!("malloc in use {heap} -> {heap_after}");
        assert!(heap_after <= heap + 64 * 1024, "malloc in use grew from {heap} to {heap_after}");
        return;
    }
    assert_child_passed(&run_child("names_are_freed_with_their_threads", &[]));
}

// ---------------------------------------------------------------------------
// Stacks and guards
// ---------------------------------------------------------------------------

#[test]
fn big_stack_takes_deep_recursion() {
    let span = Builder::new().stack_size(16 << 20).spawn(recurse_deep).unwrap().join().unwrap();
    // Proof the recursion really went deep: a 2 MiB stack would not do.
    assert!(span > 8 << 20, "only {span} bytes of stack used");
}

#[test]
fn default_stack_overflow_hits_the_guard() {
    if in_child("default_stack_overflow_hits_the_guard") {
        enter_guard_path();
        // SAFETY: only stops this (child) process from dumping core.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
        let h = rawthread::spawn(|| {
            println!("overflowing now");
            recurse_deep()
        });
        let span = h.join();
        println!("survived: {span:?}");
        return;
    }
    // With guard markers, and with `PROT_NONE` guards (markers refused).
    for env in [&[][..], &[NO_GUARD_MARKERS]] {
        let out = run_child("default_stack_overflow_hits_the_guard", env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("overflowing now"), "{env:?}: the child did not get to the recursion:\n{stdout}");
        assert!(!stdout.contains("survived"), "{env:?}: 12 MiB of recursion fit in a 2 MiB stack:\n{stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{env:?}: child status {}", out.status);
    }
}

/// glibc limits its `alloca`s to a quarter of the thread's stack, read from
/// the thread block; on 16-64 KiB stacks `printf` of a long number then
/// takes the heap instead of overflowing (as on a std::thread of that size).
#[test]
fn small_stacks_take_glibcs_big_formats() {
    if in_child("small_stacks_take_glibcs_big_formats") {
        for size in [16 << 10, 32 << 10, 64 << 10] {
            let n = Builder::new()
                .stack_size(size)
                .spawn(|| {
                    let mut buf = vec![0u8; 16 << 10];
                    // SAFETY: a NUL-terminated format and a buffer of the
                    // length passed.
                    unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.15000f".as_ptr(), 1.0f64) }
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(n, 15002, "stack {size}");
        }
        return;
    }
    assert_child_passed(&run_child("small_stacks_take_glibcs_big_formats", &[]));
}

/// `pthread_getattr_np` (used by crates such as `stacker` to find the
/// stack) describes a raw thread's real stack.
#[test]
fn pthread_getattr_np_reports_the_stack() {
    let (local, addr, size) = Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let local = 0u8;
            // SAFETY: attributes of the calling thread, read then destroyed.
            unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
                let (mut addr, mut size) = (std::ptr::null_mut(), 0);
                assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
                libc::pthread_attr_destroy(&mut attr);
                (black_box(&local) as *const u8 as usize, addr as usize, size)
            }
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(size >= 1 << 20, "stack size {size:#x}");
    assert!((addr..addr + size).contains(&local), "local {local:#x} not in {addr:#x}+{size:#x}");
}

/// `pthread_setname_np` and `pthread_getname_np` work on a raw thread,
/// from inside it and from its creator (whose `pthread_t` for it is its
/// thread pointer, the TCB's start), as the README's migration notes say.
#[test]
fn pthread_setname_np_names_a_raw_thread() {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (read, mine) = std::sync::mpsc::channel();
    let handle = rawthread::spawn(move || {
        // SAFETY: the calling thread, a NUL-terminated name of 6 bytes.
        assert_eq!(unsafe { libc::pthread_setname_np(libc::pthread_self(), c"inside".as_ptr()) }, 0);
        read.send(std::fs::read_to_string("/proc/thread-self/comm").unwrap()).unwrap();
        wait.recv().unwrap();
        let mut buf = [0u8; 16];
        // SAFETY: a buffer of the size given.
        assert_eq!(unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr().cast(), 16) }, 0);
        std::ffi::CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap().to_string()
    });
    let me = handle.layout().tcb.start as libc::pthread_t;
    // Renamed from outside only once the thread has read its own name.
    assert_eq!(mine.recv().unwrap(), "inside\n");
    assert_eq!(comm_of(handle.tid()), b"inside");
    // SAFETY: a live thread's pthread_t (its thread pointer); a short name.
    assert_eq!(unsafe { libc::pthread_setname_np(me, c"outside".as_ptr()) }, 0);
    assert_eq!(comm_of(handle.tid()), b"outside");
    go.send(()).unwrap();
    assert_eq!(handle.join().unwrap(), "outside");
}

/// `&JoinHandle` is `Sync`: every thread waiting in `thread()` for the
/// child to publish its `Thread` is woken, not just one. The child is held
/// before it publishes (a seccomp user notification on its PR_SET_NAME)
/// until all the waiters sleep on the word.
#[test]
fn every_waiter_in_thread_is_woken() {
    if in_child("every_waiter_in_thread_is_woken") {
        use std::sync::atomic::AtomicUsize;

        const WAITERS: usize = 4;
        // The probe and the pool's first region, before the filter.
        rawthread::spawn(|| ()).join().unwrap();
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jeq = |k: u32, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf,
            k,
        };
        let mut filter = [
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // A = nr
            jeq(libc::SYS_prctl as u32, 3),
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 16), // A = arg 0's low word
            jeq(libc::PR_SET_NAME as u32, 1),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
        // SAFETY: a valid filter; the listener fd is ours. Inherited only by
        // the threads this one makes from now on.
        let listener = unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &prog) as std::os::fd::RawFd
        };
        assert!(listener >= 0, "seccomp: {}", std::io::Error::last_os_error());
        // Ungated, so spawn returns while the child is held in its prctl.
        let handle = Builder::new().name("held".into()).spawn(|| 5).unwrap();
        // SAFETY: zeroed is a valid seccomp_notif; the ioctl fills it.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: as above; blocks until the child's prctl.
        assert_eq!(unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) }, 0);
        assert_eq!(notif.pid, handle.tid() as u32);
        let woken = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let (tids, tid) = std::sync::mpsc::channel();
            for _ in 0..WAITERS {
                let (handle, woken, tids) = (&handle, &woken, tids.clone());
                s.spawn(move || {
                    tids.send(gettid()).unwrap();
                    let _ = handle.thread();
                    woken.fetch_add(1, Ordering::SeqCst);
                });
            }
            let tids: Vec<_> = (0..WAITERS).map(|_| tid.recv().unwrap()).collect();
            // Every waiter asleep in a futex wait (SYS_futex, 202).
            let asleep = |tid: libc::pid_t| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap().starts_with("202 ")
            };
            while !tids.iter().all(|&t| asleep(t)) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(woken.load(Ordering::SeqCst), 0, "thread() returned before the child published");
            let resp = libc::seccomp_notif_resp {
                id: notif.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            };
            // SAFETY: a valid response to the notification received.
            assert_eq!(unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) }, 0);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while woken.load(Ordering::SeqCst) < WAITERS {
                if std::time::Instant::now() > deadline {
                    // The rest sleep for ever: the scope would never end.
                    eprintln!("{} of {WAITERS} waiters in thread() woken", woken.load(Ordering::SeqCst));
                    std::process::exit(1);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        assert_eq!(handle.join().unwrap(), 5);
        return;
    }
    common::run_child_ok("every_waiter_in_thread_is_woken");
}

/// A thread joining its own handle panics, as std's does (EDEADLK),
/// instead of waiting forever.
#[test]
fn joining_itself_panics_like_std() {
    let (handle_tx, handle_rx) = mpsc::channel::<rawthread::JoinHandle<()>>();
    let (answer_tx, answer_rx) = mpsc::channel();
    let h = rawthread::spawn(move || {
        let me = handle_rx.recv().unwrap();
        quiet_expected_panics();
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.join())).unwrap_err();
        answer_tx.send(panic.downcast_ref::<String>().cloned()).unwrap();
    });
    handle_tx.send(h).unwrap();
    let message = answer_rx.recv().unwrap().expect("a String payload");
    assert!(message.contains("failed to join thread") && message.contains("deadlock"), "{message}");
}

#[test]
fn rust_min_stack_sets_the_default_stack_size() {
    if in_child("rust_min_stack_sets_the_default_stack_size") {
        let span = rawthread::spawn(recurse_deep).join().unwrap();
        assert!(span > 8 << 20);
        return;
    }
    let out = run_child("rust_min_stack_sets_the_default_stack_size", &[("RUST_MIN_STACK", "16777216")]);
    assert_child_passed(&out);
}

/// In the calling thread: the size of the guard right below its stack,
/// guard markers or `PROT_NONE` pages, found by walking down from the
/// stack pointer (0 if the stack's mapping ends first).
fn guard_below_own_stack() -> usize {
    let marker = 0u8;
    let page = page_size();
    let mut addr = black_box(&marker) as *const u8 as usize & !(page - 1);
    while guard_at(addr) == Guard::Open {
        if protection_at(addr) == "unmapped" {
            return 0;
        }
        addr -= page;
    }
    let kind = guard_at(addr);
    let top = addr + page;
    while guard_at(addr) == kind {
        addr -= page;
    }
    top - (addr + page)
}

/// `JoinHandle::layout` describes the region as it is: pieces in order
/// and adjacent, the stack holding the thread's locals, the TCB at the
/// thread pointer with the tid word in it, the guard unreadable.
#[test]
fn layout_matches_the_running_thread() {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let h = Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let local = 0u8;
            // SAFETY: pthread_self has no preconditions.
            let tp = unsafe { libc::pthread_self() } as usize;
            tx.send((black_box(&local) as *const u8 as usize, tp, guard_below_own_stack())).unwrap();
            done_rx.recv().unwrap();
        })
        .unwrap();
    let (local, tp, guard_seen) = rx.recv().unwrap();
    let l = h.layout();
    let pieces = [&l.altstack_guard, &l.altstack, &l.guard, &l.stack, &l.record, &l.resolver, &l.static_tls, &l.tcb];
    assert_eq!(l.region.start, l.altstack_guard.start);
    assert_eq!(l.altstack_guard.len(), page_size());
    for pair in pieces.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "{l:#x?}");
    }
    assert!(l.tcb.end <= l.region.end && l.region.end - l.tcb.end < 4096, "{l:#x?}");
    assert!(l.stack.end - l.stack.start >= 256 << 10);
    assert!(l.stack.contains(&local));
    assert_eq!(tp, l.tcb.start);
    assert!(l.tcb.contains(&l.tid_word));
    // SAFETY: the tid word of a live thread whose region the handle owns.
    assert_eq!(unsafe { *(l.tid_word as *const libc::pid_t) }, h.tid());
    assert_eq!(l.guard.len(), page_size());
    assert!(guard_seen >= l.guard.len());
    done_tx.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn guard_pages_lie_below_the_stack() {
    let page = page_size();
    // The kernel may merge the guard with a PROT_NONE neighbour below it,
    // so the guard seen is at least the one asked for.
    let default = rawthread::spawn(guard_below_own_stack).join().unwrap();
    assert!(default >= page, "default guard {default:#x}");
    let odd = Builder::new().guard_size(3 * 4096 + 1).spawn(guard_below_own_stack).unwrap().join().unwrap();
    assert!(odd >= 4 * 4096 && odd >= page, "guard_size(3 * 4096 + 1) gave {odd:#x}");
    let big = Builder::new().guard_size(64 << 10).spawn(guard_below_own_stack).unwrap().join().unwrap();
    assert!(big >= 64 << 10, "guard_size(64 KiB) gave {big:#x}");
}

/// Under every live thread's alternate signal stack, and under its stack,
/// lies a guard of its own region, whatever is mapped below the region
/// (usually another thread's TCB): guard sizes 0, 1 page and 16 KiB, fresh
/// and reused regions. A guard marker where the kernel has them (seen in
/// `/proc/self/pagemap`, the region one mapping), else `PROT_NONE`: both
/// paths, the second with markers refused as an old kernel refuses them.
#[test]
fn a_guard_lies_under_every_altstack() {
    if in_child("a_guard_lies_under_every_altstack") {
        enter_guard_path();
        let want = if markers_installable() { Guard::Marker } else { Guard::ProtNone };
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate_rx));
        for round in 0..2 {
            let threads: Vec<_> = [0, 4096, 16 << 10, 4096, 0, 4096, 16 << 10, 4096]
                .into_iter()
                .map(|guard| {
                    let gate = gate.clone();
                    Builder::new()
                        .guard_size(guard)
                        .stack_size(64 << 10)
                        .spawn(move || {
                            let _ = gate.lock().unwrap().recv();
                        })
                        .unwrap()
                })
                .collect();
            for h in &threads {
                let l = h.layout();
                assert_eq!(l.altstack_guard.end, l.altstack.start);
                assert_eq!(l.altstack_guard.start, l.region.start);
                assert_eq!(l.guard.end, l.stack.start);
                let guards = [l.altstack_guard.start, l.altstack.start - 1, l.guard.start, l.stack.start - 1];
                for addr in guards.into_iter().filter(|&a| l.altstack_guard.contains(&a) || l.guard.contains(&a)) {
                    assert_eq!(guard_at(addr), want, "round {round}: {addr:#x} of {l:#x?}");
                }
                for addr in [l.altstack.start, l.altstack.end - 1, l.stack.start, l.stack.end - 1, l.tcb.start] {
                    assert_eq!(guard_at(addr), Guard::Open, "round {round}: {addr:#x} of {l:#x?}");
                }
                if want == Guard::Marker {
                    let mapping = protection_at(l.region.start);
                    assert!(
                        l.region.clone().step_by(page_size()).all(|a| protection_at(a) == mapping),
                        "round {round}: a guard marker split the region's mapping: {l:#x?}"
                    );
                }
            }
            threads.iter().for_each(|_| gate_tx.send(()).unwrap());
            threads.into_iter().for_each(|h| h.join().unwrap());
        }
        println!("guards: {want:?}");
        return;
    }
    for (env, want) in [(&[][..], "Marker"), (&[NO_GUARD_MARKERS], "ProtNone")] {
        let out = run_child("a_guard_lies_under_every_altstack", env);
        assert_child_passed(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // This kernel (6.18) has markers; an older one would fall back.
        assert!(stdout.contains(&format!("guards: {want}")) || !markers_installable(), "{env:?}: {stdout}");
    }
}

/// What the kernel does with guard markers after they are installed: a
/// pooled region handed to the next thread keeps them, `MADV_DONTNEED`
/// (the stack given back) keeps them, and so does `fork()`: in the child,
/// the pooled region is still guarded, and a thread spawned there on it
/// that overflows dies in the guard, reported.
#[test]
fn guard_markers_survive_reuse_dontneed_and_fork() {
    if in_child("guard_markers_survive_reuse_dontneed_and_fork") {
        if !markers_installable() {
            println!("no guard markers on this kernel");
            return;
        }
        let guards = |l: &rawthread::ThreadLayout| {
            let pages = l.altstack_guard.clone().chain(l.guard.clone()).step_by(page_size());
            pages.map(guard_at).collect::<Vec<_>>()
        };
        let spawn = |f: fn()| Builder::new().stack_size(64 << 10).spawn(f).unwrap();
        drain_pool();
        let first = spawn(|| ());
        let l = first.layout();
        first.join().unwrap();
        let all_markers = vec![Guard::Marker; (l.altstack_guard.len() + l.guard.len()) / page_size()];
        assert_eq!(guards(&l), all_markers, "fresh: {l:#x?}");
        let again = spawn(|| ());
        assert_eq!(again.layout().region, l.region, "the pool handed out another region");
        assert_eq!(guards(&l), all_markers, "reused");
        again.join().unwrap();
        // The region is pooled, its thread gone: its stack is free.
        let below_top = l.stack.end & !(page_size() - 1);
        // SAFETY: the pooled region's guards, signal stack and stack, which
        // no thread uses; MADV_DONTNEED only zeroes them.
        let rc = unsafe {
            libc::madvise(l.region.start as *mut libc::c_void, below_top - l.region.start, libc::MADV_DONTNEED)
        };
        assert_eq!(rc, 0);
        assert_eq!(guards(&l), all_markers, "after MADV_DONTNEED");
        // SAFETY: the child only checks, spawns and exits (_exit).
        match unsafe { libc::fork() } {
            0 => {
                let ok = guards(&l) == all_markers;
                let (go_tx, go_rx) = mpsc::channel::<()>();
                let diver = Builder::new()
                    .name("diver".into())
                    .stack_size(64 << 10)
                    .spawn(move || {
                        go_rx.recv().unwrap();
                        eprintln!("diving");
                        let _ = recurse_deep();
                    })
                    .unwrap();
                let same = diver.layout().region == l.region;
                eprintln!("forked child: markers kept {ok}, same region {same}");
                if ok && same {
                    go_tx.send(()).unwrap();
                    let _ = diver.join();
                }
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(1) };
            }
            pid => {
                assert!(pid > 0);
                let mut status = 0;
                // SAFETY: our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV, "status {status:#x}");
            }
        }
        println!("markers kept on reuse, MADV_DONTNEED and fork");
        return;
    }
    let out = run_child("guard_markers_survive_reuse_dontneed_and_fork", &[]);
    assert_child_passed(&out);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("no guard markers") || stderr.contains("thread 'diver' (tid "),
        "the forked child's overflow was not reported:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("no guard markers") || stderr.contains("markers kept true, same region true"), "{stderr}");
}

/// How deep the SIGUSR1 handler below recurses, in 1 KiB frames.
static OVERRUN_FRAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn overrun(frames: usize) -> u8 {
    let mut buf = [0u8; 1024];
    buf.fill(frames as u8);
    let below = if frames > 0 { overrun(frames - 1) } else { 0 };
    black_box(&buf)[0].wrapping_add(below)
}

extern "C" fn overrunning_handler(_: libc::c_int) {
    black_box(overrun(OVERRUN_FRAMES.load(Ordering::Relaxed)));
}

/// A signal handler that overruns the alternate signal stack by 8 KiB (a
/// crash reporter's, nested `SA_ONSTACK` handlers) faults in the guard
/// under it, and the process dies by SIGSEGV. Without that guard it would
/// have written, unnoticed, into the mapping below the region: here the
/// TCB of another thread, checked byte for byte should the process live on.
#[test]
fn overrunning_the_altstack_faults_before_the_neighbour() {
    if in_child("overrunning_the_altstack_faults_before_the_neighbour") {
        enter_guard_path();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (_ready_tx, ready_rx) = mpsc::channel::<()>();
        // The victim is mapped first; the neighbour, mapped next, lies
        // right below it (mmap hands out addresses top-down).
        let victim = Builder::new()
            .stack_size(96 << 10)
            .spawn(move || {
                go_rx.recv().unwrap();
                // SAFETY: a handler that only recurses on its (alternate)
                // stack; raised in this thread alone.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = overrunning_handler as *const () as usize;
                    action.sa_flags = libc::SA_ONSTACK;
                    assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
                    libc::raise(libc::SIGUSR1);
                }
            })
            .unwrap();
        let neighbour = Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let _ = ready_rx.recv();
            })
            .unwrap();
        let (v, n) = (victim.layout(), neighbour.layout());
        assert_eq!(n.region.end, v.region.start, "the neighbour lies right below: {n:#x?} {v:#x?}");
        OVERRUN_FRAMES.store(v.altstack.len() / 1024 + 8, Ordering::Relaxed);
        // SAFETY: the neighbour's TCB, which it does not write while it
        // waits; read while the process lives.
        let tcb = || unsafe { std::slice::from_raw_parts(n.tcb.start as *const u8, n.tcb.len()).to_vec() };
        let before = tcb();
        go_tx.send(()).unwrap();
        victim.join().unwrap();
        let touched = before != tcb();
        println!("the handler returned; the neighbour's TCB was {}", if touched { "overwritten" } else { "untouched" });
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        // Leave at once: woken, a neighbour with an overwritten TCB would
        // crash the process and hide that the handler returned.
        // SAFETY: ends the child process.
        unsafe { libc::_exit(0) };
    }
    // With guard markers, and with `PROT_NONE` guards (markers refused).
    for env in [&[][..], &[NO_GUARD_MARKERS]] {
        let out = run_child("overrunning_the_altstack_faults_before_the_neighbour", env);
        // A neighbour overwritten may crash the process later on: what
        // counts is that the handler never came back.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("the handler returned"), "{env:?}: the overrun went unnoticed");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSEGV),
            "{env:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn guard_size_zero_and_odd_sizes_work() {
    // Each thread uses most of a small stack, right down to its bottom.
    let use_stack = || deep(40).0;
    let want = (1..=40u64).sum::<u64>();
    for guard in [0, 1, 3 * 4096 + 1, 5 * 4096] {
        let h = Builder::new().guard_size(guard).stack_size(128 << 10).spawn(use_stack).unwrap();
        assert_eq!(h.join().unwrap(), want, "guard_size({guard})");
    }
}

#[test]
fn small_and_unaligned_stack_sizes_work() {
    for size in [0, 1, 16 << 10, 100_000, (2 << 20) + 1] {
        let h = Builder::new().stack_size(size).spawn(move || format!("stack {size}")).unwrap();
        assert_eq!(h.join().unwrap(), format!("stack {size}"));
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The builder fails with ENOMEM, drops the closure, and runs nothing.
fn assert_enomem(builder: Builder) {
    let witness = Arc::new(());
    let w = witness.clone();
    let err = builder.spawn(move || drop(w)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "{err}");
    assert_eq!(Arc::strong_count(&witness), 1, "the closure was leaked");
}

#[test]
fn impossible_sizes_are_enomem() {
    assert_enomem(Builder::new().stack_size(usize::MAX));
    assert_enomem(Builder::new().guard_size(usize::MAX));
    assert_enomem(Builder::new().stack_size(usize::MAX / 2).guard_size(usize::MAX / 2 + 4096));
    // No overflow, but more than the address space.
    assert_enomem(Builder::new().stack_size(1 << 62));
    // And the next spawn is fine.
    assert_eq!(rawthread::spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn huge_stack_size_does_not_crash() {
    // 64 TiB: mmap may or may not grant it (MAP_NORESERVE), but nothing breaks.
    match Builder::new().stack_size(1 << 46).spawn(gettid) {
        Ok(h) => {
            let tid = h.tid();
            assert_eq!(h.join().unwrap(), tid);
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "{e}"),
    }
}

// ---------------------------------------------------------------------------
// JoinHandle
// ---------------------------------------------------------------------------

static FINISH_DROPPED: AtomicBool = AtomicBool::new(false);

/// Sets `FINISH_DROPPED` when dropped (no reference in the `const`
/// initialiser: before Rust 1.89 it may not point at a static's atomic).
struct SetOnDrop;

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        FINISH_DROPPED.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static FINISH_GUARD: SetOnDrop = const { SetOnDrop };
}

#[test]
fn is_finished_false_while_blocked_then_true() {
    let (tx, rx) = mpsc::channel::<u32>();
    let h = rawthread::spawn(move || {
        FINISH_GUARD.with(|_| ());
        rx.recv().unwrap() * 2
    });
    // It cannot finish before it receives.
    assert!(!h.is_finished());
    tx.send(21).unwrap();
    while !h.is_finished() {
        thread::yield_now();
    }
    // Finished means exited: its thread_local destructors have run.
    assert!(FINISH_DROPPED.load(Ordering::SeqCst));
    assert_eq!(h.join().unwrap(), 42);
}

#[test]
fn is_finished_after_a_panic() {
    quiet_expected_panics();
    let h = rawthread::spawn(|| panic!("expected panic: finishing by panic"));
    while !h.is_finished() {
        thread::yield_now();
    }
    assert!(h.join().is_err());
}

#[test]
fn tid_matches_gettid_and_pid_matches_the_process() {
    let h = rawthread::spawn(|| {
        // SAFETY: getpid has no preconditions.
        (gettid(), unsafe { libc::getpid() }, Path::new(&format!("/proc/self/task/{}", gettid())).exists())
    });
    let tid = h.tid();
    assert!(tid > 0 && tid != gettid());
    let (inside, pid, listed) = h.join().unwrap();
    assert_eq!(inside, tid);
    assert_eq!(pid as u32, std::process::id());
    assert!(listed, "the thread is not in /proc/self/task");
}

#[test]
fn join_handle_debug_shows_the_tid() {
    let (tx, rx) = mpsc::channel::<()>();
    let h = rawthread::spawn(move || rx.recv().unwrap());
    let shown = format!("{h:?}");
    assert!(shown.contains("JoinHandle") && shown.contains(&h.tid().to_string()), "{shown}");
    tx.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn join_from_another_thread() {
    let (tx, rx) = mpsc::channel::<u64>();
    let target = rawthread::spawn(move || (gettid(), rx.recv().unwrap() + 1));
    let tid = target.tid();
    // A raw thread joins a thread it did not spawn...
    let joiner = rawthread::spawn(move || target.join().unwrap());
    tx.send(99).unwrap();
    assert_eq!(joiner.join().unwrap(), (tid, 100));
    // ...and so does a std thread.
    let target = rawthread::spawn(gettid);
    let tid = target.tid();
    assert_eq!(thread::spawn(move || target.join().unwrap()).join().unwrap(), tid);
}

#[test]
fn detached_thread_runs_to_completion() {
    let (go_tx, go_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel();
    let h = rawthread::spawn(move || {
        let v = go_rx.recv().unwrap();
        done_tx.send((gettid(), v * 3)).unwrap();
    });
    let tid = h.tid();
    // Dropped while it runs: the thread is detached, not killed.
    drop(h);
    go_tx.send(14).unwrap();
    assert_eq!(done_rx.recv().unwrap(), (tid, 42));
    // It then exits on its own...
    while Path::new(&format!("/proc/self/task/{tid}")).exists() {
        thread::yield_now();
    }
    // ...and a later spawn, which frees what it left, works.
    assert_eq!(rawthread::spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn uses_clone3_is_known_after_a_spawn() {
    rawthread::spawn(|| ()).join().unwrap();
    assert!(rawthread::uses_clone3().is_some());
}

/// Makes every thread creation in the calling thread fail with EAGAIN, as
/// at a thread limit, whichever of clone3 and clone rawthread uses.
fn refuse_thread_creation() {
    refuse_syscalls(&[(libc::SYS_clone3, libc::EAGAIN), (libc::SYS_clone, libc::EAGAIN)]);
}

const CLONE3_ERRNO_ENV: &str = "RAWTHREAD_CLONE3_ERRNO";

#[test]
fn legacy_clone_fallback_when_clone3_is_refused() {
    if in_child("legacy_clone_fallback_when_clone3_is_refused") {
        quiet_expected_panics();
        // First spawn with clone3 available (if the kernel has it)...
        rawthread::spawn(|| ()).join().unwrap();
        let errno = std::env::var(CLONE3_ERRNO_ENV).unwrap().parse().unwrap();
        refuse_syscalls(&[(libc::SYS_clone3, errno)]);
        // ...then threads made by the legacy clone do everything as well.
        let h = Builder::new()
            .name("legacy".into())
            .spawn(|| {
                FINISH_GUARD.with(|_| ());
                let nested = rawthread::spawn(gettid);
                let nested_tid = nested.tid();
                assert_eq!(nested.join().unwrap(), nested_tid);
                (comm_of(gettid()), gettid())
            })
            .unwrap();
        let tid = h.tid();
        assert_eq!(h.join().unwrap(), (b"legacy".to_vec(), tid));
        assert!(FINISH_DROPPED.load(Ordering::SeqCst), "thread_local destructor did not run");
        assert_eq!(rawthread::uses_clone3(), Some(false));
        assert!(rawthread::spawn(|| panic!("expected panic: on a legacy-clone thread")).join().is_err());
        let mut v = vec![1];
        rawthread::scope(|s| {
            s.spawn(|| v.push(2));
        });
        assert_eq!(v, [1, 2]);
        return;
    }
    for errno in [libc::ENOSYS, libc::EPERM] {
        let out = run_child("legacy_clone_fallback_when_clone3_is_refused", &[(CLONE3_ERRNO_ENV, &errno.to_string())]);
        assert_child_passed(&out);
    }
}

fn blocked_signals() -> Vec<i32> {
    // SAFETY: a zeroed sigset_t is valid; SIG_BLOCK with no set only reads.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask), 0);
        (1..=64).filter(|&s| libc::sigismember(&mask, s) == 1).collect()
    }
}

#[test]
fn clone_failure_is_reported_and_leaves_the_library_usable() {
    if in_child("clone_failure_is_reported_and_leaves_the_library_usable") {
        // A thread made before the filter, which will not inherit it.
        let (job_tx, job_rx) = mpsc::channel::<()>();
        let unfiltered = thread::spawn(move || {
            job_rx.recv().unwrap();
            rawthread::spawn(|| 5).join().unwrap()
        });
        rawthread::spawn(|| ()).join().unwrap();
        let clone3 = rawthread::uses_clone3();
        refuse_thread_creation();
        let mask = blocked_signals();
        let err = Builder::new().spawn(|| ()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
        assert_eq!(blocked_signals(), mask, "a failed spawn changed the signal mask");
        // EAGAIN is no reason to give up on clone3.
        assert_eq!(rawthread::uses_clone3(), clone3);
        job_tx.send(()).unwrap();
        assert_eq!(unfiltered.join().unwrap(), 5);
        return;
    }
    assert_child_passed(&run_child("clone_failure_is_reported_and_leaves_the_library_usable", &[]));
}

#[test]
fn clone_failure_drops_the_closure() {
    if in_child("clone_failure_drops_the_closure") {
        rawthread::spawn(|| ()).join().unwrap();
        refuse_thread_creation();
        let witness = Arc::new(());
        let w = witness.clone();
        let err = rawthread::Builder::new().spawn(move || drop(w)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(Arc::strong_count(&witness), 1, "the closure was leaked");
        return;
    }
    assert_child_passed(&run_child("clone_failure_drops_the_closure", &[]));
}

// ---------------------------------------------------------------------------
// What threads leave behind
// ---------------------------------------------------------------------------

/// 64 allocating threads alive at once, until malloc has made all the
/// arenas it ever will (8 per core), then an empty region pool: the
/// baseline. (Threads one after another would not do: each inherits the
/// last one's malloc state, arena included.)
fn warm_up_malloc_arenas() {
    let gate = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let gate = gate.clone();
            rawthread::spawn(move || {
                gate.wait();
                black_box(vec![0u8; 4096]).len()
            })
        })
        .collect();
    threads.into_iter().for_each(|t| assert_eq!(t.join().unwrap(), 4096));
    drain_pool();
}

#[test]
fn no_mapping_or_tls_leak_over_many_threads() {
    if in_child("no_mapping_or_tls_leak_over_many_threads") {
        quiet_expected_panics();
        warm_up_malloc_arenas();

        // Threads that never call malloc: not a byte or a mapping may stay.
        let (maps, heap) = (mapping_count(), malloc_in_use());
        for i in 0..1000u64 {
            assert_eq!(rawthread::spawn(move || black_box(i) * 2).join().unwrap(), i * 2);
        }
        drain_pool();
        let (maps_after, heap_after) = (mapping_count(), malloc_in_use());
        println!("plain threads: maps {maps} -> {maps_after}, malloc in use {heap} -> {heap_after}");
        assert!(maps_after <= maps + 2, "mappings grew from {maps} to {maps_after}");
        assert!(heap_after <= heap + 16 * 1024, "malloc in use grew from {heap} to {heap_after}");

        // Allocating, panicking, scoped and detached threads: no region stays.
        for i in 0..300u64 {
            let h = rawthread::spawn(move || {
                assert!(i % 3 != 0, "expected panic: #{i}");
                vec![i; 100].iter().sum::<u64>()
            });
            assert_eq!(h.join().ok(), (i % 3 != 0).then_some(i * 100));
        }
        for _ in 0..100 {
            let mut x = 0;
            rawthread::scope(|s| {
                s.spawn(|| x += 1);
            });
            assert_eq!(x, 1);
        }
        let (tid_tx, tid_rx) = mpsc::channel();
        let releases: Vec<_> = (0..200)
            .map(|_| {
                let (go_tx, go_rx) = mpsc::channel::<()>();
                let tid_tx = tid_tx.clone();
                // Dropped while blocked: the thread frees its own region.
                drop(rawthread::spawn(move || {
                    go_rx.recv().unwrap();
                    tid_tx.send(gettid()).unwrap();
                }));
                go_tx
            })
            .collect();
        drop(tid_tx);
        release_and_wait_for_exit(releases, tid_rx);
        // Every thread has exited. Empty the region pool: what stays
        // mapped then is what leaked.
        drain_pool();
        let maps_end = mapping_count();
        println!("all threads: maps {maps} -> {maps_end}");
        assert!(maps_end <= maps + 8, "mappings grew from {maps} to {maps_end}");
        return;
    }
    let out = run_child("no_mapping_or_tls_leak_over_many_threads", &[]);
    assert_child_passed(&out);
}

/// In a child process (the pool off if `POOL=off`): `threads` raw threads
/// one after another, each running `body`, grow malloc's bytes in use by
/// at most 64 KiB once malloc's arenas are warm.
fn assert_malloc_bounded(threads: usize, body: fn()) {
    if std::env::var("POOL").as_deref() == Ok("off") {
        rawthread::set_pool_limits(rawthread::PoolLimits { regions: 0, bytes: 0 });
    }
    warm_up_malloc_arenas();
    let heap = malloc_in_use();
    for _ in 0..threads {
        rawthread::spawn(body).join().unwrap();
    }
    let heap_after = malloc_in_use();
    println!("malloc in use {heap} -> {heap_after}");
    assert!(heap_after <= heap + 64 * 1024, "malloc in use grew from {heap} to {heap_after}");
}

/// glibc frees a thread's malloc cache in a clean-up it does not export;
/// rawthread hands the cache on to the next thread instead. With reuse off
/// every region is unmapped, so the hand-over goes through the stash. The
/// same holds, and the first spawn's check of the hand-over passes, with
/// malloc tuned to keep no per-thread cache or to use one arena.
#[test]
fn allocating_threads_do_not_leak_malloc_memory() {
    if in_child("allocating_threads_do_not_leak_malloc_memory") {
        // std::thread does this with ~0 growth; 64 KiB is generous.
        return assert_malloc_bounded(500, || {
            for size in [16, 100, 500, 1000] {
                black_box(vec![1u8; size]);
            }
        });
    }
    for (pool, tunables) in [
        ("on", ""),
        ("off", ""),
        ("on", "glibc.malloc.arena_max=1"),
        ("on", "glibc.malloc.tcache_count=0"),
        ("off", "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"),
    ] {
        let out =
            run_child("allocating_threads_do_not_leak_malloc_memory", &[("POOL", pool), ("GLIBC_TUNABLES", tunables)]);
        assert_child_passed(&out);
    }
}

/// What else glibc frees when one of its threads exits: the buffers that
/// `strerror` and `strsignal` allocate for unknown numbers, and the last
/// `dlerror()` message. Raw threads free them too (10,000 threads, pool on
/// and off), and no thread finds the message its region's last thread left.
#[test]
fn glibc_per_thread_buffers_do_not_leak() {
    if in_child("glibc_per_thread_buffers_do_not_leak") {
        // One leaked buffer per thread would add 320 KB or more.
        return assert_malloc_bounded(10_000, || {
            // SAFETY: plain libc calls; the strings are read before the
            // thread calls them again.
            unsafe {
                assert!(libc::dlerror().is_null(), "a stale dlerror() message");
                let e = std::ffi::CStr::from_ptr(libc::strerror(1000)).to_str().unwrap();
                assert!(e.ends_with("1000"), "{e}");
                let s = std::ffi::CStr::from_ptr(libc::strsignal(200)).to_str().unwrap();
                assert!(s.ends_with("200"), "{s}");
                let lib = libc::dlopen(c"librawthread-no-such-library.so".as_ptr(), libc::RTLD_NOW);
                assert!(lib.is_null());
            }
        });
    }
    for pool in ["on", "off"] {
        assert_child_passed(&run_child("glibc_per_thread_buffers_do_not_leak", &[("POOL", pool)]));
    }
}

/// Lets blocked threads go (one message each), then waits until every
/// thread that sent its tid has left /proc/self/task.
fn release_and_wait_for_exit(releases: Vec<mpsc::Sender<()>>, tids: mpsc::Receiver<libc::pid_t>) {
    releases.into_iter().for_each(|go| go.send(()).unwrap());
    for tid in tids {
        while Path::new(&format!("/proc/self/task/{tid}")).exists() {
            thread::yield_now();
        }
    }
}

/// The mapped ranges of this process, from /proc/self/maps.
fn mapped_ranges() -> Vec<std::ops::Range<usize>> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .map(|line| {
            let (start, end) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
            usize::from_str_radix(start, 16).unwrap()..usize::from_str_radix(end, 16).unwrap()
        })
        .collect()
}

/// Emptying the pool gives back every region threads ever had, whether
/// their handles were joined, dropped while the thread ran, or dropped
/// after it finished: none of those ranges is mapped any more.
#[test]
fn emptied_pool_unmaps_every_region() {
    if in_child("emptied_pool_unmaps_every_region") {
        warm_up_malloc_arenas();
        let maps = mapping_count();
        let mut regions = Vec::new();
        let sizes = [64 << 10, 256 << 10, 2 << 20];
        let work = || black_box(vec![1u8; 64]).len();
        for i in 0..60 {
            let h = Builder::new().stack_size(sizes[i % 3]).spawn(work).unwrap();
            regions.push(h.layout().region);
            assert_eq!(h.join().unwrap(), 64);
        }
        let (tid_tx, tid_rx) = mpsc::channel();
        let releases: Vec<_> = (0..60)
            .map(|i| {
                let (go_tx, go_rx) = mpsc::channel::<()>();
                let tid_tx = tid_tx.clone();
                let h = Builder::new()
                    .stack_size(sizes[i % 3])
                    .spawn(move || {
                        go_rx.recv().unwrap();
                        tid_tx.send(gettid()).unwrap();
                        work()
                    })
                    .unwrap();
                regions.push(h.layout().region);
                drop(h);
                go_tx
            })
            .collect();
        drop(tid_tx);
        release_and_wait_for_exit(releases, tid_rx);
        for i in 0..60 {
            let h = Builder::new().stack_size(sizes[i % 3]).spawn(work).unwrap();
            while !h.is_finished() {
                thread::yield_now();
            }
            regions.push(h.layout().region);
            drop(h);
        }
        let limits = rawthread::set_pool_limits(rawthread::PoolLimits { regions: 0, bytes: 0 });
        let still: Vec<_> = mapped_ranges()
            .into_iter()
            .filter(|m| regions.iter().any(|r| r.start < m.end && m.start < r.end))
            .collect();
        let maps_after = mapping_count();
        println!("{} regions; mappings {maps} -> {maps_after}", regions.len());
        assert!(still.is_empty(), "still mapped after emptying the pool: {still:x?}");
        assert!(maps_after <= maps + 2, "mappings grew from {maps} to {maps_after}");
        rawthread::set_pool_limits(limits);
        return;
    }
    assert_child_passed(&run_child("emptied_pool_unmaps_every_region", &[]));
}

/// Parks until `go` is set, as a thread waiting for its `unpark()` does
/// (a park may end early, or take an earlier unpark's token); says whether
/// an unpark ended it rather than a bound of 60 s, which turns a lost
/// unpark into a failure instead of a hang.
fn park_until(go: &AtomicBool) -> bool {
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.load(Ordering::Acquire) {
        let now = std::time::Instant::now();
        if now >= bound {
            return false;
        }
        thread::park_timeout(bound - now);
    }
    true
}

/// `JoinHandle::thread()` is the thread's own `Thread`: the same id as
/// `thread::current()` inside it, and its `unpark()` wakes the thread's
/// `park()`; for plain, detached and scoped threads. It waits only for the
/// thread to start, not for its closure: here the closure waits for an
/// answer that is sent only once `thread()` has returned.
#[test]
fn join_handle_thread_is_the_threads_own() {
    let (answer, wait) = mpsc::channel::<()>();
    let go = Arc::new(AtomicBool::new(false));
    let handle = {
        let go = go.clone();
        rawthread::spawn(move || {
            let answered = wait.recv_timeout(std::time::Duration::from_secs(60)).is_ok();
            (thread::current().id(), answered, park_until(&go))
        })
    };
    let id = handle.thread().id();
    answer.send(()).unwrap();
    assert_ne!(id, thread::current().id());
    go.store(true, Ordering::Release);
    handle.thread().unpark();
    let (seen, answered, woken) = handle.join().unwrap();
    assert_eq!(seen, id);
    assert!(answered, "thread() waited for the closure");
    assert!(woken, "thread().unpark() did not wake the thread's park()");

    // Handles dropped before and after their threads finish.
    for wait_first in [false, true] {
        let (tx, rx) = mpsc::channel();
        let handle = rawthread::spawn(move || tx.send(thread::current().id()).unwrap());
        let id = handle.thread().id();
        if wait_first {
            while !handle.is_finished() {
                thread::yield_now();
            }
        }
        drop(handle);
        assert_eq!(rx.recv().unwrap(), id);
    }

    let go = AtomicBool::new(false);
    rawthread::scope(|s| {
        let handle = s.spawn(|| (park_until(&go), thread::current().id()));
        go.store(true, Ordering::Release);
        handle.thread().unpark();
        let id = handle.thread().id();
        assert_eq!(handle.join().unwrap(), (true, id));
    });
}

/// `join_timeout` gives the handle back while the thread runs (a zero
/// timeout is a try-join), the result once it has exited; a handle given
/// back still joins and detaches as any other.
#[test]
fn join_timeout_returns_the_handle_until_the_thread_exits() {
    use std::time::Duration;
    let (go, wait) = mpsc::channel::<()>();
    let handle = rawthread::spawn(move || {
        wait.recv().unwrap();
        42
    });
    let handle = handle.join_timeout(Duration::ZERO).expect_err("a try-join of a waiting thread");
    let handle = handle.join_timeout(Duration::from_millis(20)).expect_err("a waiting thread after 20 ms");
    assert!(!handle.is_finished());
    go.send(()).unwrap();
    assert_eq!(handle.join_timeout(Duration::from_secs(600)).expect("exited").unwrap(), 42);

    // A finished thread: even a try-join gets its result, or its panic.
    common::quiet_expected_panics();
    let handle = rawthread::spawn(|| panic!("{}", common::EXPECTED));
    while !handle.is_finished() {
        thread::yield_now();
    }
    assert!(handle.join_timeout(Duration::ZERO).expect("finished").is_err());

    // Given back, then dropped: detached, it still runs to its end.
    let (done, ended) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let handle = rawthread::spawn(move || {
        wait.recv().unwrap();
        done.send(()).unwrap();
    });
    drop(handle.join_timeout(Duration::ZERO).expect_err("waiting"));
    go.send(()).unwrap();
    ended.recv().unwrap();
}

/// The calling thread's mask of blocked signals, read with the raw system
/// call (glibc's wrapper hides its internal signals).
fn kernel_blocked_signals() -> u64 {
    let mut mask = 0u64;
    // SAFETY: a valid 8-byte out-pointer for the kernel's sigset.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, std::ptr::null::<u64>(), &mut mask, 8) };
    mask
}

/// `Builder::signal_mask` is the mask the thread starts with, not its
/// creator's, but for glibc's SIGCANCEL and SIGSETXID, which stay
/// unblocked whatever is asked; without it, the creator's mask.
#[test]
fn signal_mask_is_the_threads_first_mask() {
    let bit = |signal: i32| 1u64 << (signal - 1);
    let set = |signals: &[i32]| {
        // SAFETY: a zeroed sigset_t, filled by glibc's own calls.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigemptyset(&mut set) };
        for &s in signals {
            // SAFETY: as above.
            unsafe { libc::sigaddset(&mut set, s) };
        }
        set
    };
    let mut asked = set(&[libc::SIGUSR1, libc::SIGTERM]);
    // glibc's sigaddset refuses its internal signals: set their bits by hand.
    // SAFETY: a sigset_t starts with the kernel's 64 signal bits.
    unsafe { *(&raw mut asked).cast::<u64>() |= bit(32) | bit(33) };
    let mask = Builder::new().signal_mask(&asked).spawn(kernel_blocked_signals).unwrap().join().unwrap();
    assert_eq!(mask, bit(libc::SIGUSR1) | bit(libc::SIGTERM), "the asked mask, without 32 and 33");

    // The creator's mask is inherited when none is asked, here from a
    // thread that blocks SIGUSR2.
    let inherited = thread::spawn(move || {
        let usr2 = set(&[libc::SIGUSR2]);
        // SAFETY: blocks SIGUSR2 in this thread only.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, std::ptr::null_mut()) };
        let creator = kernel_blocked_signals();
        (creator, rawthread::spawn(kernel_blocked_signals).join().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(inherited.0, inherited.1);
    assert_ne!(inherited.1 & bit(libc::SIGUSR2), 0);
}
