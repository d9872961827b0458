//! Raw threads meeting a refusing kernel, signals, fork, exec, exit and
//! stack overflow. Each case runs in a child process of its own: it
//! installs seccomp filters, rlimits or signal handlers, or ends the
//! process.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{
    CHILD_ENV, NO_GUARD_MARKERS, address_space, assert_child_passed, enter_guard_path, fds, glibc_user_threads,
    in_child, maps, refuse_syscalls, run_child, run_child_ok,
};

/// Both refused with EAGAIN: every spawn is `Err(EAGAIN)`, and 1,000 of
/// them leak no mapping and no file descriptor.
#[test]
fn clone_eagain_is_an_error_and_leaks_nothing() {
    if in_child("clone_eagain_is_an_error_and_leaks_nothing") {
        // Refused before the first spawn, its probe fails; after one, the
        // raw clone itself, its block already on glibc's thread list.
        let after_a_spawn = std::env::var("AFTER_A_SPAWN").is_ok();
        if after_a_spawn {
            rawthread::spawn(|| ()).join().unwrap();
        }
        refuse_syscalls(&[(libc::SYS_clone3, libc::EAGAIN), (libc::SYS_clone, libc::EAGAIN)]);
        let first = rawthread::Builder::new().spawn(|| ()).unwrap_err();
        assert_eq!(first.raw_os_error(), Some(libc::EAGAIN));
        let (maps0, fds0, listed0) = (maps(), fds(), glibc_user_threads());
        for _ in 0..1000 {
            let e = rawthread::Builder::new().spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        }
        assert_eq!((maps(), fds()), (maps0, fds0));
        assert_eq!(glibc_user_threads(), listed0, "glibc's thread list after 1000 failed spawns");
        assert!(listed0.is_some());
        return;
    }
    let out = run_child("clone_eagain_is_an_error_and_leaks_nothing", &[("AFTER_A_SPAWN", "1")]);
    assert_child_passed(&out);
    run_child_ok("clone_eagain_is_an_error_and_leaks_nothing");
}

/// Limits the address space (`RLIMIT_AS`, as `ulimit -v`) to what this
/// process uses now plus `headroom` bytes, or lifts the limit (`None`).
/// Only the soft limit changes, so that a test may raise it again.
fn limit_address_space(headroom: Option<u64>) {
    let limit = headroom.map_or(libc::RLIM_INFINITY, |h| address_space() + h);
    let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill, then to set; lowering the soft
    // limit, or raising it up to the hard one, needs no privilege.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut rlimit), 0);
        rlimit.rlim_cur = limit.min(rlimit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &rlimit), 0);
    }
}

/// Under an address-space limit a huge stack is `Err(ENOMEM)`; small ones
/// still work.
#[test]
fn address_space_limit_gives_enomem() {
    if in_child("address_space_limit_gives_enomem") {
        rawthread::spawn(|| ()).join().unwrap();
        limit_address_space(Some(256 << 20));
        let e = rawthread::Builder::new().stack_size(1 << 30).spawn(|| ()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOMEM));
        for _ in 0..10 {
            assert_eq!(rawthread::Builder::new().stack_size(256 << 10).spawn(|| 5).unwrap().join().unwrap(), 5);
        }
        return;
    }
    run_child_ok("address_space_limit_gives_enomem");
}

/// Under an address-space limit set before the first spawn, as batch
/// schedulers set `ulimit -v`, with 96 MiB to spare, and with 48 MiB: too
/// little for malloc to make a new arena for a new thread (it reserves
/// 128 MiB for one, or 64 MiB that the kernel happens to align), so the
/// first spawn's probe meets a thread that malloc serves with a mapping
/// per chunk. The first spawn and later ones succeed, with small and
/// default stacks, a few at once, each allocating.
#[test]
fn first_spawn_under_an_address_space_limit() {
    const TEST: &str = "first_spawn_under_an_address_space_limit";
    if in_child(TEST) {
        let mib: u64 = std::env::var("HEADROOM_MIB").unwrap().parse().unwrap();
        limit_address_space(Some(mib << 20));
        let work = |n: usize| move || (0..n).map(|i| vec![i; i + 1].len()).sum::<usize>();
        let first = rawthread::Builder::new().stack_size(64 << 10).spawn(work(10));
        assert_eq!(first.expect("the first spawn").join().unwrap(), 55);
        for _ in 0..3 {
            let small: Vec<_> =
                (0..4).map(|_| rawthread::Builder::new().stack_size(64 << 10).spawn(work(100)).unwrap()).collect();
            let default: Vec<_> = (0..4).map(|_| rawthread::spawn(work(1000))).collect();
            for handle in small.into_iter().chain(default) {
                assert!(handle.join().unwrap() >= 5050);
            }
        }
        return;
    }
    for mib in ["96", "48"] {
        assert_child_passed(&run_child(TEST, &[("HEADROOM_MIB", mib)]));
    }
}

/// Under limits too tight for the first spawn's probe, it fails with the
/// shortage it met (ENOMEM, or EAGAIN for a thread), never `Unsupported`,
/// and leaves nothing behind, so that a later spawn may probe again:
/// * from a thread made under the limit (which malloc left without an
///   arena, so it has none to lend the probe);
/// * at every headroom from 256 KiB up in steps of 8 KiB, until the probe
///   finds room (each step, the probe runs short at some other point: its
///   stacks, its threads, its mallocs, strerror's buffers, the spawn's own
///   region), each failure leaving as many mappings and tasks as before.
///
/// Once the limit is lifted, a spawn succeeds.
#[test]
fn probe_short_of_memory_is_enomem_and_leaves_nothing() {
    const TEST: &str = "probe_short_of_memory_is_enomem_and_leaves_nothing";
    if !in_child(TEST) {
        run_child_ok(TEST);
        return;
    }
    let is_shortage = |e: &std::io::Error| {
        assert!(matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EAGAIN)), "not a shortage: {e:?}");
    };
    let settled = |tasks0: usize| {
        // A joined thread may linger in /proc/self/task for a moment (the
        // kernel clears its tid word first).
        while common::tasks() > tasks0 {
            std::thread::yield_now();
        }
    };
    let tasks0 = common::tasks();
    limit_address_space(Some(48 << 20));
    let from_a_new_thread = std::thread::spawn(|| rawthread::Builder::new().stack_size(64 << 10).spawn(|| ()).err());
    is_shortage(&from_a_new_thread.join().unwrap().expect("a spawn from a thread without an arena"));
    limit_address_space(None);
    settled(tasks0);
    let base = (maps(), common::tasks());
    let (mut failures, mut errnos) = (0, std::collections::BTreeSet::new());
    for kib in (256..4096).step_by(4) {
        limit_address_space(Some(kib << 10));
        let spawned = rawthread::Builder::new().stack_size(64 << 10).spawn(|| 7);
        limit_address_space(None);
        match spawned {
            Ok(handle) => {
                assert_eq!(handle.join().unwrap(), 7);
                println!("the first spawn succeeded with {kib} KiB to spare");
                break;
            }
            Err(e) => {
                is_shortage(&e);
                settled(base.1);
                assert_eq!((maps(), common::tasks()), base, "after a failed spawn with {kib} KiB to spare");
                failures += 1;
                errnos.insert(e.raw_os_error());
            }
        }
    }
    println!("{failures} failed spawns, errnos {errnos:?}");
    assert!(failures > 0);
    for _ in 0..3 {
        assert_eq!(rawthread::spawn(|| 8).join().unwrap(), 8);
    }
}

/// `fork()` from a raw thread: the child is a copy of that thread alone,
/// and ordinary code (allocation, stdout, even a new raw thread) runs in it.
#[test]
fn fork_from_a_raw_thread() {
    if in_child("fork_from_a_raw_thread") {
        let status = rawthread::spawn(|| {
            // SAFETY: fork in a thread; the child only runs code that is
            // fine after fork in this (now single-threaded) copy.
            match unsafe { libc::fork() } {
                0 => {
                    let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
                    println!("forked child: {} strings", v.len());
                    let tasks = std::fs::read_dir("/proc/self/task").unwrap().count();
                    let inner = rawthread::spawn(move || tasks * 10).join().unwrap();
                    // SAFETY: ends the forked child at once.
                    unsafe { libc::_exit(if inner == 10 { 42 } else { 1 }) }
                }
                pid => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                    status
                }
            }
        })
        .join()
        .unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42, "status {status:#x}");
        return;
    }
    assert!(run_child_ok("fork_from_a_raw_thread").contains("forked child: 1000 strings"));
}

/// Waits for our child `pid`; a child stuck in a wait never exits, so after
/// a generous `seconds` (not a timing assertion: a bound that turns a hang
/// into a failure) it is killed and `None` comes back.
fn wait_bounded(pid: libc::pid_t, seconds: u64) -> Option<libc::c_int> {
    let start = std::time::Instant::now();
    let mut status = 0;
    // SAFETY: polling our own child.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if start.elapsed() > std::time::Duration::from_secs(seconds) {
            // SAFETY: our own stuck child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Some(status)
}

/// `fork()` from a raw thread at the instant the main thread makes its
/// first join and its second spawn, in a fresh process, 200 times: what
/// rawthread computes lazily at that moment must not leave the forked
/// child waiting for a thread it does not have. Each round is a fresh
/// process (the child half below), since the race is with first use.
#[test]
fn fork_during_lazy_start_up() {
    if in_child("fork_during_lazy_start_up") {
        let forker = rawthread::spawn(|| {
            // SAFETY: the forked child spawns, joins and detaches raw
            // threads and leaves with _exit; the parent waits for it.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let ok = rawthread::spawn(|| 7).join().unwrap() == 7;
                drop(rawthread::spawn(|| ()));
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            pid
        });
        let other = rawthread::spawn(|| ());
        let pid = forker.join().unwrap();
        other.join().unwrap();
        assert!(pid > 0);
        let status = wait_bounded(pid, 20).expect("the forked child is stuck in its first spawn or join");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
        return;
    }
    let stuck: Vec<usize> =
        (0..200).filter(|_| !run_child("fork_during_lazy_start_up", &[]).status.success()).collect();
    assert!(stuck.is_empty(), "{} of 200 fresh processes had a forked child stuck or failing", stuck.len());
}

/// Four threads make their first spawns at once, in a fresh process, 100
/// times: each runs the first-spawn probe, which takes glibc's thread-list
/// lock while the others wait for it; every spawn succeeds and glibc's
/// list is sound afterwards. (A probe whose failed attempt at the lock
/// released it for its holder once made a third of such processes fail.)
#[test]
fn concurrent_first_spawns_all_succeed() {
    if in_child("concurrent_first_spawns_all_succeed") {
        let gate = std::sync::Arc::new(std::sync::Barrier::new(4));
        let racers: Vec<_> = (0..4)
            .map(|i| {
                let gate = gate.clone();
                std::thread::spawn(move || {
                    gate.wait();
                    rawthread::Builder::new().spawn(move || i).map(|h| h.join().unwrap())
                })
            })
            .collect();
        for (i, racer) in racers.into_iter().enumerate() {
            assert_eq!(racer.join().unwrap().expect("a first spawn"), i);
        }
        assert!(glibc_user_threads().is_some(), "glibc's thread list is not a sound ring");
        return;
    }
    let failed: Vec<String> = (0..100)
        .map(|_| run_child("concurrent_first_spawns_all_succeed", &[]))
        .filter(|out| !out.status.success())
        .map(|out| {
            // The panic's message: the line after "panicked at".
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            stderr.lines().skip_while(|l| !l.contains("panicked at")).nth(1).unwrap_or(&stderr).to_string()
        })
        .collect();
    assert!(failed.is_empty(), "{} of 100 processes failed, first: {:?}", failed.len(), failed.first());
}

/// `fork()` while other threads spawn and join without pause: whatever
/// rawthread lock they held at that moment, the child can still spawn.
#[test]
fn fork_while_other_threads_spawn() {
    if in_child("fork_while_other_threads_spawn") {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                rawthread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        rawthread::spawn(|| ()).join().unwrap();
                        drop(rawthread::spawn(|| ()));
                    }
                })
            })
            .collect();
        for i in 0..1000 {
            // SAFETY: the child spawns and joins one raw thread and leaves
            // with _exit; the parent waits for it.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let ok = rawthread::spawn(|| 7).join().unwrap() == 7;
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            assert!(pid > 0);
            let status =
                wait_bounded(pid, 60).unwrap_or_else(|| panic!("fork #{i}: the child could not spawn (stuck)"));
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "fork #{i}: status {status:#x}");
        }
        stop.store(true, Ordering::Relaxed);
        churners.into_iter().for_each(|c| c.join().unwrap());
        return;
    }
    run_child_ok("fork_while_other_threads_spawn");
}

/// `std::process::Command` from raw threads: spawn, wait, capture output.
#[test]
fn command_from_raw_threads() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            rawthread::spawn(move || {
                let out =
                    std::process::Command::new("sh").arg("-c").arg(format!("echo hi{i}; exit {i}")).output().unwrap();
                (out.status.code(), String::from_utf8(out.stdout).unwrap())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), (Some(i as i32), format!("hi{i}\n")));
    }
}

/// `std::process::exit` from a raw thread ends the whole process with its
/// code, while the main thread is blocked in `join`.
#[test]
fn process_exit_from_a_raw_thread() {
    if in_child("process_exit_from_a_raw_thread") {
        let h = rawthread::spawn(|| std::process::exit(37));
        h.join().unwrap();
        unreachable!("the process should have exited");
    }
    assert_eq!(run_child("process_exit_from_a_raw_thread", &[]).status.code(), Some(37));
}

static DEPTH: AtomicUsize = AtomicUsize::new(0);

#[allow(unconditional_recursion)] // it ends in the guard page
fn recurse(n: usize) -> usize {
    let frame = [n as u8; 512];
    DEPTH.fetch_max(n, Ordering::Relaxed);
    std::hint::black_box(&frame);
    recurse(n + 1) + frame[0] as usize
}

/// Running into the guard: the process dies by SIGSEGV (no hang, no
/// silent corruption) and stderr names the thread and its tid.
#[test]
fn stack_overflow_is_reported() {
    if in_child("stack_overflow_is_reported") {
        enter_guard_path();
        let h = rawthread::Builder::new()
            .name("deep-diver".into())
            .stack_size(256 << 10)
            .spawn(|| {
                // SAFETY: gettid has no preconditions.
                eprintln!("overflowing tid {}", unsafe { libc::gettid() });
                recurse(0)
            })
            .unwrap();
        h.join().unwrap();
        unreachable!("the overflow should have killed the process");
    }
    // With guard markers, and with `PROT_NONE` guards (markers refused).
    for env in [&[][..], &[NO_GUARD_MARKERS]] {
        let out = run_child("stack_overflow_is_reported", env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{env:?}: stderr: {stderr}");
        let tid = stderr.lines().find_map(|l| l.strip_prefix("overflowing tid ")).expect("tid line");
        let report = format!("thread 'deep-diver' (tid {tid}) has overflowed its stack");
        assert!(stderr.contains(&report), "{env:?}: no {report:?} in stderr: {stderr}");
    }
}

/// An unnamed raw thread is reported as such; a std thread's overflow is
/// still std's to report (our handler hands it back).
#[test]
fn overflow_report_for_unnamed_and_std_threads() {
    if in_child("overflow_report_unnamed") {
        rawthread::spawn(|| recurse(0)).join().unwrap();
        unreachable!();
    }
    if in_child("overflow_report_std") {
        // Our handler is installed, once: a second spawn must not install
        // it again over itself (it would then hand std's faults to itself).
        rawthread::spawn(|| ()).join().unwrap();
        rawthread::spawn(|| ()).join().unwrap();
        std::thread::Builder::new().name("std-diver".into()).spawn(|| recurse(0)).unwrap().join().unwrap();
        unreachable!();
    }
    use std::os::unix::process::ExitStatusExt;
    let out = run_child("overflow_report_for_unnamed_and_std_threads", &[(CHILD_ENV, "overflow_report_unnamed")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{stderr}");
    assert!(stderr.contains("thread '<unnamed>' (tid "), "{stderr}");

    let out = run_child("overflow_report_for_unnamed_and_std_threads", &[(CHILD_ENV, "overflow_report_std")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.signal() == Some(libc::SIGABRT) || out.status.signal() == Some(libc::SIGSEGV), "{stderr}");
    assert!(stderr.contains("thread 'std-diver'") && stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(!stderr.contains("(tid "), "rawthread claimed a std thread's overflow: {stderr}");
}
