//! The `Builder` options beyond std that the creator applies to the child
//! after `clone` and before its first line of user code (affinity,
//! scheduling, a pidfd), their errors, and what a failed one leaves: the
//! closure dropped unrun, and nothing else.

mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{drain_pool, fds, glibc_user_threads, in_child, live_tasks, maps, refuse_syscalls, run_child_ok, tasks};
use rawthread::{Builder, Scheduling};

/// How often each check is repeated: a child that ran before its set-up
/// was done would be caught in some of them.
const ROUNDS: usize = 100;

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    assert_eq!(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) }, 0);
    // SAFETY: reads a valid set.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// What the calling thread sees of its CPU and its allowed CPUs.
fn where_am_i() -> (usize, Vec<usize>) {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    (cpu as usize, allowed_cpus())
}

#[test]
fn affinity_holds_from_the_first_line_of_user_code() {
    let cpus = allowed_cpus();
    for &cpu in &cpus {
        for _ in 0..ROUNDS {
            let seen = Builder::new().affinity([cpu]).spawn(where_am_i).unwrap().join().unwrap();
            assert_eq!(seen, (cpu, vec![cpu]), "a thread asked to run on CPU {cpu} alone");
        }
    }
    // A set of several, and numbers beyond any kernel's, which are ignored.
    let seen = Builder::new().affinity(cpus.iter().copied().chain([usize::MAX])).spawn(where_am_i);
    assert_eq!(seen.unwrap().join().unwrap().1, cpus);
    // Scoped threads take it too.
    rawthread::scope(|s| {
        let handle = Builder::new().affinity([cpus[0]]).spawn_scoped(s, where_am_i).unwrap();
        assert_eq!(handle.join().unwrap(), (cpus[0], vec![cpus[0]]));
    });
}

/// The calling thread's policy, nice value and real-time priority.
fn my_scheduling() -> (i32, i32, i32) {
    // SAFETY: plain queries of the calling thread (tid 0 is "me").
    unsafe {
        let policy = libc::sched_getscheduler(0);
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        assert_eq!(*libc::__errno_location(), 0, "getpriority");
        let mut param = libc::sched_param { sched_priority: -1 };
        assert_eq!(libc::sched_getparam(0, &mut param), 0);
        (policy, nice, param.sched_priority)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process may raise priorities (`CAP_SYS_NICE`, bit 23 of
/// its effective capabilities): root need not have it (in a container).
fn can_raise_priority() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff in /proc/self/status");
    u64::from_str_radix(caps.trim(), 16).unwrap() & (1 << 23) != 0
}

#[test]
fn scheduling_holds_from_the_first_line_of_user_code() {
    // Relative to the creator's own nice value, which the test may have
    // been started with; the policies without one keep it.
    let (policy, nice, _) = my_scheduling();
    let mut cases = vec![
        (Scheduling::Other { nice: (nice + 3).min(19) }, (libc::SCHED_OTHER, (nice + 3).min(19), 0)),
        (Scheduling::Batch { nice: (nice + 7).min(19) }, (libc::SCHED_BATCH, (nice + 7).min(19), 0)),
        (Scheduling::Idle, (libc::SCHED_IDLE, nice, 0)),
    ];
    if can_raise_priority() {
        cases.extend([
            (Scheduling::Other { nice: -5 }, (libc::SCHED_OTHER, -5, 0)),
            (Scheduling::Fifo { priority: 1 }, (libc::SCHED_FIFO, nice, 1)),
            (Scheduling::RoundRobin { priority: 2 }, (libc::SCHED_RR, nice, 2)),
        ]);
    } else {
        println!("skipped the privileged policies: no CAP_SYS_NICE");
    }
    for (scheduling, expected) in cases {
        for _ in 0..ROUNDS {
            let seen = Builder::new().scheduling(scheduling).spawn(my_scheduling).unwrap().join().unwrap();
            assert_eq!(seen, expected, "{scheduling:?}");
        }
    }
    // The creator keeps its own.
    assert_eq!(my_scheduling(), (policy, nice, 0));
}

#[test]
fn scheduling_out_of_range_is_einval() {
    for scheduling in [
        Scheduling::Fifo { priority: 0 },
        Scheduling::Fifo { priority: 100 },
        Scheduling::RoundRobin { priority: 100 },
        Scheduling::Other { nice: 20 },
        Scheduling::Batch { nice: -21 },
    ] {
        let e = Builder::new().scheduling(scheduling).spawn(|| ()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{scheduling:?}");
    }
}

/// Builds a closure that records whether it ran, and an `Arc` whose count
/// tells whether the closure was dropped.
fn watched() -> (Arc<AtomicBool>, impl FnOnce() + Send + 'static) {
    let ran = Arc::new(AtomicBool::new(false));
    let mine = ran.clone();
    (ran, move || mine.store(true, Ordering::SeqCst))
}

/// What a process has that a leaking spawn would grow. Its threads are
/// counted without those that have begun to exit: one just joined, or a
/// failed spawn's child just waited for, may still be listed in
/// /proc/self/task for a while.
fn resources() -> (usize, usize, usize, Option<usize>) {
    drain_pool();
    (maps(), fds(), live_tasks(), glibc_user_threads())
}

/// Spawns that fail in their set-up, after the clone: each is the
/// expected error, runs nothing, drops its closure, and 200 of them leave
/// the process as they found it; a scope whose spawn failed ends.
fn assert_failing_spawns_leak_nothing(builder: impl Fn() -> Builder, errno: Option<i32>, kind: std::io::ErrorKind) {
    let check = |e: std::io::Error| {
        assert_eq!((e.raw_os_error(), e.kind()), (errno, kind), "{e}");
    };
    // A first spawn made the probe and the pool's first region.
    rawthread::spawn(|| ()).join().unwrap();
    let before = resources();
    for _ in 0..200 {
        let (ran, f) = watched();
        check(builder().spawn(f).unwrap_err());
        assert!(!ran.load(Ordering::SeqCst), "the closure of a failed spawn ran");
        assert_eq!(Arc::strong_count(&ran), 1, "the closure of a failed spawn was not dropped");
    }
    rawthread::scope(|s| {
        let (ran, f) = watched();
        check(builder().spawn_scoped(s, f).unwrap_err());
        assert!(!ran.load(Ordering::SeqCst));
    });
    assert_eq!(resources(), before, "maps, fds, tasks, glibc's list after 200 failed spawns");
    // And the next good spawn works.
    assert_eq!(rawthread::spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn failed_affinity_frees_everything() {
    if in_child("failed_affinity_frees_everything") {
        let cpus = allowed_cpus();
        // One CPU the kernel has, or could have, but this process may not use.
        let outside = (0..8192).find(|cpu| !cpus.contains(cpu)).unwrap();
        let einval = Some(libc::EINVAL);
        let other = std::io::ErrorKind::InvalidInput;
        assert_failing_spawns_leak_nothing(|| Builder::new().affinity([]), einval, other);
        assert_failing_spawns_leak_nothing(|| Builder::new().affinity([outside]), einval, other);
        assert_failing_spawns_leak_nothing(|| Builder::new().affinity([usize::MAX]), einval, other);
        // With a pidfd asked for too: none is left open.
        assert_failing_spawns_leak_nothing(|| Builder::new().pidfd(true).affinity([]), einval, other);
        let invalid = || Builder::new().pidfd(true).scheduling(Scheduling::Fifo { priority: 0 });
        assert_failing_spawns_leak_nothing(invalid, einval, other);
        return;
    }
    run_child_ok("failed_affinity_frees_everything");
}

/// Without the right to them, a real-time policy and a lower nice value
/// are `EPERM` from `spawn`, and free everything.
#[test]
fn refused_scheduling_is_eperm_and_frees_everything() {
    if in_child("refused_scheduling_is_eperm_and_frees_everything") {
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid rlimits; lowering them needs no privilege. Then,
        // as root, become nobody, who has no CAP_SYS_NICE.
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_RTPRIO, &none), 0);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NICE, &none), 0);
            if libc::geteuid() == 0 {
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
        }
        let eperm = Some(libc::EPERM);
        let denied = std::io::ErrorKind::PermissionDenied;
        assert_failing_spawns_leak_nothing(
            || Builder::new().scheduling(Scheduling::Fifo { priority: 1 }),
            eperm,
            denied,
        );
        let rr = || Builder::new().scheduling(Scheduling::RoundRobin { priority: 1 });
        assert_failing_spawns_leak_nothing(rr, eperm, denied);
        let nicer = || Builder::new().scheduling(Scheduling::Other { nice: -1 });
        assert_failing_spawns_leak_nothing(nicer, eperm, denied);
        // Raising one's own nice value needs no right.
        let nicer = (my_scheduling().1 + 1).min(19);
        let seen = Builder::new().scheduling(Scheduling::Other { nice: nicer }).spawn(my_scheduling).unwrap();
        assert_eq!(seen.join().unwrap(), (libc::SCHED_OTHER, nicer, 0));
        return;
    }
    run_child_ok("refused_scheduling_is_eperm_and_frees_everything");
}

/// The tid the kernel says a pidfd refers to (`Pid:` in its fdinfo).
fn pidfd_target(fd: RawFd) -> Option<libc::pid_t> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines().find_map(|line| line.strip_prefix("Pid:\t")).map(|pid| pid.parse().unwrap())
}

/// The file an fd refers to, as (device, inode).
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is valid; fstat fills it or fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// epoll_wait for one event on `epoll`, waiting at most `timeout_ms`.
fn wait_for_event(epoll: RawFd, timeout_ms: i32) -> Option<u32> {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: room for one event.
    let n = unsafe { libc::epoll_wait(epoll, &mut event, 1, timeout_ms) };
    assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
    (n == 1).then_some(event.events)
}

#[test]
fn a_join_awaited_through_epoll() {
    // SAFETY: epoll_create1 has no preconditions.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let handle = Builder::new().pidfd(true).spawn(move || wait.recv().map(|()| 42)).unwrap();
    let fd = handle.pidfd().expect("asked for a pidfd").as_raw_fd();
    assert_eq!(pidfd_target(fd), Some(handle.tid()), "the pidfd is the thread's");
    let pidfd_file = file_id(fd).expect("fstat the pidfd");
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 7 };
    // SAFETY: valid fds and event.
    assert_eq!(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) }, 0);

    // Alive: not readable, however often asked.
    for _ in 0..10 {
        assert_eq!(wait_for_event(epoll, 1), None, "readable before the thread exited");
    }
    assert!(!handle.is_finished());
    go.send(()).unwrap();
    let events = wait_for_event(epoll, 600_000).expect("no readiness within 600 s of the thread's end");
    assert_ne!(events & libc::EPOLLIN as u32, 0);
    // Readable means exited: the join does not wait.
    assert!(handle.is_finished(), "readable, yet the tid word is not clear");
    assert_eq!(handle.join_timeout(Duration::ZERO).expect("exited").unwrap(), Ok(42));
    // SAFETY: our own epoll fd.
    unsafe { libc::close(epoll) };
    // The handle closed the pidfd: the number is free, or another file's
    // (pidfs gives each pid its own inode). Not `Pid:` in fdinfo, which
    // reads -1 for any pidfd of an exited thread.
    assert_ne!(file_id(fd), Some(pidfd_file), "the handle left its pidfd open");
}

#[test]
fn pidfds_are_closed_with_their_handles() {
    if in_child("pidfds_are_closed_with_their_handles") {
        let alone = tasks();
        let spawn_some = || {
            for i in 0..200 {
                let handle = Builder::new().pidfd(true).spawn(|| ()).unwrap();
                assert!(handle.pidfd().is_some());
                if i % 2 == 0 {
                    handle.join().unwrap(); // joined
                } else {
                    drop(handle); // detached
                }
            }
            rawthread::scope(|s| {
                for _ in 0..20 {
                    let handle = Builder::new().pidfd(true).spawn_scoped(s, || ()).unwrap();
                    assert!(handle.pidfd().is_some());
                }
            });
            // Detached threads finish on their own: wait for their tasks.
            while tasks() > alone {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Once first, for what threads alive at once keep (malloc's arenas).
        spawn_some();
        let before = resources();
        spawn_some();
        assert_eq!(resources(), before);
        return;
    }
    run_child_ok("pidfds_are_closed_with_their_handles");
}

/// On a kernel without thread pidfds, asking for one is `Unsupported`,
/// and frees everything; so is a full fd table `EMFILE`.
#[test]
fn pidfd_refused_frees_everything() {
    if in_child("pidfd_refused_frees_everything") {
        let unsupported = std::io::ErrorKind::Unsupported;
        let errno = std::env::var("ERRNO").unwrap().parse().unwrap();
        if errno == libc::EMFILE {
            rawthread::spawn(|| ()).join().unwrap();
            // The lowest free fd, kept open: with the limit just above
            // it, no fd is left for a pidfd.
            let hold = std::fs::File::open("/proc/self/stat").unwrap();
            let limit = hold.as_raw_fd() as libc::rlim_t + 1;
            let limit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            // SAFETY: a valid rlimit; lowering needs no privilege.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            let e = Builder::new().pidfd(true).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
            drop(hold);
            return;
        }
        refuse_syscalls(&[(libc::SYS_pidfd_open, errno)]);
        assert_failing_spawns_leak_nothing(|| Builder::new().pidfd(true), None, unsupported);
        // Without a pidfd, spawning is as ever.
        assert_eq!(rawthread::spawn(|| 1).join().unwrap(), 1);
        return;
    }
    for errno in [libc::EINVAL, libc::ENOSYS, libc::EMFILE] {
        let out = common::run_child("pidfd_refused_frees_everything", &[("ERRNO", &errno.to_string())]);
        common::assert_child_passed(&out);
    }
}

/// A `setuid()` (here `seteuid`: glibc's SIGSETXID round) racing with
/// spawns that fail in their set-up: the cancelled child, on glibc's list
/// until it leaves it, must take SIGSETXID, or the two wait for each other
/// for ever (the setxid for its answer, the child for the list's lock).
#[test]
fn setxid_racing_with_cancelled_spawns() {
    if in_child("setxid_racing_with_cancelled_spawns") {
        use std::sync::atomic::AtomicUsize;
        static PROGRESS: AtomicUsize = AtomicUsize::new(0);
        static DONE: AtomicBool = AtomicBool::new(false);
        rawthread::spawn(|| ()).join().unwrap();
        // A deadlock fails within seconds, not at run_child's bound.
        std::thread::spawn(|| {
            let mut last = usize::MAX;
            loop {
                std::thread::sleep(Duration::from_secs(30));
                let now = PROGRESS.load(Ordering::SeqCst);
                if now == last {
                    // A panic here would end only this thread.
                    eprintln!("no progress in 30 s: a setuid() and a cancelled spawn deadlocked");
                    std::process::exit(1);
                }
                last = now;
            }
        });
        let flipper = std::thread::spawn(|| {
            while !DONE.load(Ordering::SeqCst) {
                // SAFETY: plain calls; root may drop its effective uid and
                // take it back (its saved uid stays 0).
                unsafe {
                    assert_eq!(libc::seteuid(65534), 0);
                    assert_eq!(libc::seteuid(0), 0);
                }
                PROGRESS.fetch_add(1, Ordering::SeqCst);
                // Back to back, setxid rounds starve the spawns of glibc's
                // list lock (2000 spawns take minutes instead of a second).
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        for _ in 0..2000 {
            let e = Builder::new().affinity([]).spawn(|| ()).unwrap_err();
            // EPERM if the setxid has reached this thread and not yet the
            // child, which is still root's.
            assert!(matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)), "{e}");
            PROGRESS.fetch_add(1, Ordering::SeqCst);
        }
        DONE.store(true, Ordering::SeqCst);
        flipper.join().unwrap();
        return;
    }
    if !is_root() {
        println!("skipped: seteuid(65534) and back needs root");
        return;
    }
    run_child_ok("setxid_racing_with_cancelled_spawns");
}

/// A closure whose captures panic on drop, in a spawn that fails in its
/// set-up: as std's, the panic unwinds from `spawn` in the caller (no user
/// code runs on the child), after the spawn has freed what it made; in a
/// scope, the scope still ends.
#[test]
fn a_failed_spawns_closure_may_panic_on_drop() {
    if in_child("a_failed_spawns_closure_may_panic_on_drop") {
        common::quiet_expected_panics();
        struct Bomb(libc::pid_t);
        impl Drop for Bomb {
            fn drop(&mut self) {
                assert_eq!(common::gettid(), self.0, "dropped on another thread than the spawner");
                panic!("{}: dropping the closure of a failed spawn", common::EXPECTED);
            }
        }
        rawthread::spawn(|| ()).join().unwrap();
        let before = resources();
        for _ in 0..50 {
            let bomb = Bomb(common::gettid());
            let spawn = std::panic::catch_unwind(|| Builder::new().affinity([]).spawn(move || drop(bomb)));
            let panic = spawn.expect_err("the drop's panic unwinds from spawn");
            assert!(panic.downcast_ref::<String>().is_some_and(|m| m.contains("dropping the closure")));
        }
        let scoped = std::panic::catch_unwind(|| {
            rawthread::scope(|s| {
                let bomb = Bomb(common::gettid());
                let _ = Builder::new().affinity([]).spawn_scoped(s, move || drop(bomb));
            })
        });
        assert!(scoped.is_err(), "the scope passes the panic on");
        assert_eq!(resources(), before, "maps, fds, tasks, glibc's list after failed spawns that panicked");
        assert_eq!(rawthread::spawn(|| 3).join().unwrap(), 3);
        return;
    }
    run_child_ok("a_failed_spawns_closure_may_panic_on_drop");
}
