//! glibc's per-thread duties that a raw thread must do as a pthread does,
//! each checked by what a user sees: glibc's own calls on a raw thread
//! answer as they answer on a pthread, and nothing is left behind. Each is
//! a row of the duty table in `src/glibc/mod.rs`. (That the last thread to
//! leave ends the process is `tests/last_thread.rs`.)

mod common;

use std::ffi::c_void;
use std::ptr;

use common::{assert_child_passed, in_child, run_child};

/// glibc's `pthread_getattr_np` of the calling thread: (stack size, guard
/// size, policy, inherit mode).
fn own_attributes() -> (usize, usize, i32, i32) {
    // SAFETY: attributes filled by glibc and destroyed here; out-pointers.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let (mut addr, mut size, mut guard, mut policy, mut inherit) = (ptr::null_mut(), 0, 0, -1, -1);
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_getschedpolicy(&attr, &mut policy);
        libc::pthread_attr_getinheritsched(&attr, &mut inherit);
        libc::pthread_attr_destroy(&mut attr);
        (size, guard, policy, inherit)
    }
}

/// glibc records a thread's guard (`guardsize`, `reported_guardsize`):
/// `pthread_getattr_np` reports the raw thread's real guard and its stack
/// without it, as for a pthread made with that guard.
#[test]
fn getattr_reports_the_guard() {
    let page = common::page_size();
    for guard in [None, Some(64 << 10)] {
        let mut builder = rawthread::Builder::new().stack_size(256 << 10);
        if let Some(guard) = guard {
            builder = builder.guard_size(guard);
        }
        let handle = builder.spawn(own_attributes).unwrap();
        let layout = handle.layout();
        let (size, reported, _, _) = handle.join().unwrap();
        assert_eq!(reported, guard.unwrap_or(page), "the guard pthread_getattr_np reports");
        assert_eq!(reported, layout.guard.len());
        assert_eq!(size, layout.stack.len(), "the stack pthread_getattr_np reports");
    }
    // The same on a pthread, for comparison: its default guard is a page.
    let (_, std_guard, std_policy, std_inherit) = std::thread::spawn(own_attributes).join().unwrap();
    assert_eq!(std_guard, page);
    let (_, _, policy, inherit) = rawthread::spawn(own_attributes).join().unwrap();
    assert_eq!((policy, inherit), (std_policy, std_inherit), "an unset scheduling is reported as a pthread's");
}

/// glibc records the scheduling a thread was started with: after
/// `Builder::scheduling`, `pthread_getattr_np` and `pthread_getschedparam`
/// report the policy the kernel runs the thread under, as for a pthread
/// made with that policy explicitly.
#[test]
fn getattr_reports_the_scheduling() {
    let (_, _, policy, inherit) = rawthread::Builder::new()
        .scheduling(rawthread::Scheduling::Idle)
        .spawn(own_attributes)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(policy, libc::SCHED_IDLE, "the policy pthread_getattr_np reports");
    assert_eq!(inherit, libc::PTHREAD_EXPLICIT_SCHED);
    let (kernel, glibc) = rawthread::Builder::new()
        .scheduling(rawthread::Scheduling::Batch { nice: 0 })
        .spawn(|| {
            let mut param: libc::sched_param = libc::sched_param { sched_priority: -1 };
            let mut policy = -1;
            // SAFETY: our own thread; out-pointers.
            let err = unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
            assert_eq!(err, 0);
            // SAFETY: sched_getscheduler(0) has no preconditions.
            (unsafe { libc::sched_getscheduler(0) }, policy)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!((kernel, glibc), (libc::SCHED_BATCH, libc::SCHED_BATCH));
}

/// glibc's calls on a thread take one whose exit word (from glibc 2.43,
/// `joinstate`) reads "exited" for gone, and answer ESRCH: on a live raw
/// thread they must work, from itself and from its creator, and after its
/// exit answer as for an exited pthread.
#[test]
fn glibc_thread_calls_work_on_a_raw_thread() {
    fn calls(thread: libc::pthread_t) -> [i32; 3] {
        let mut param = libc::sched_param { sched_priority: 0 };
        let mut policy = 0;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: a live or exited-but-unjoined thread's handle; out-pointers.
        unsafe {
            [
                libc::pthread_getschedparam(thread, &mut policy, &mut param),
                libc::pthread_setschedprio(thread, 0),
                libc::pthread_getcpuclockid(thread, &mut clock),
            ]
        }
    }
    // SAFETY: pthread_self has no preconditions.
    assert_eq!(rawthread::spawn(|| calls(unsafe { libc::pthread_self() })).join().unwrap(), [0; 3], "on itself");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let handle = rawthread::spawn(move || rx.recv().unwrap());
    let thread = handle.layout().tcb.start as libc::pthread_t;
    assert_eq!(calls(thread), [0; 3], "from its creator");
    // After its exit, as on a pthread that exited and was not yet joined.
    tx.send(()).unwrap();
    while !handle.is_finished() {
        std::thread::yield_now();
    }
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let pthread = std::thread::spawn(move || tid_tx.send(common::gettid()).unwrap());
    let pthread_t = std::os::unix::thread::JoinHandleExt::as_pthread_t(&pthread);
    let tid = tid_rx.recv().unwrap();
    // Gone from /proc: the kernel has cleared the pthread's exit word.
    while std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
        std::thread::yield_now();
    }
    assert_eq!(calls(thread), calls(pthread_t), "on an exited thread, as on a pthread");
    pthread.join().unwrap();
    handle.join().unwrap();
}

/// glibc sets `exiting` when a thread exits, which `pthread_kill` reads:
/// on an exited, unjoined raw thread it answers 0, as on a pthread.
#[test]
fn pthread_kill_on_an_exited_raw_thread() {
    let handle = rawthread::spawn(|| ());
    while !handle.is_finished() {
        std::thread::yield_now();
    }
    // SAFETY: the raw thread's `struct pthread`, kept until the join.
    assert_eq!(unsafe { libc::pthread_kill(handle.layout().tcb.start as libc::pthread_t, 0) }, 0);
    handle.join().unwrap();
}

/// glibc gives each thread an empty robust-mutex list and registers it
/// with the kernel: a robust mutex locked in a raw thread works, and when
/// the thread exits holding it, the next locker gets EOWNERDEAD.
#[test]
fn robust_mutexes_in_raw_threads() {
    const TEST: &str = "robust_mutexes_in_raw_threads";
    if !in_child(TEST) {
        return assert_child_passed(&run_child(TEST, &[]));
    }
    // SAFETY: all-zero is a valid (uninitialised) pthread_mutex_t.
    let mutex = Box::into_raw(Box::new(unsafe { std::mem::zeroed::<libc::pthread_mutex_t>() })) as usize;
    // SAFETY: attributes and a mutex of ours, initialised here and used
    // while the box lives (leaked).
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        assert_eq!(libc::pthread_mutex_init(mutex as *mut _, &attr), 0);
    }
    let head = rawthread::spawn(move || {
        // SAFETY: the mutex above; left locked on purpose.
        assert_eq!(unsafe { libc::pthread_mutex_lock(mutex as *mut _) }, 0);
        let (mut head, mut len) = (0usize, 0usize);
        // SAFETY: two out-pointers.
        unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &mut head, &mut len) };
        head
    })
    .join()
    .unwrap();
    assert_ne!(head, 0, "the raw thread registered no robust list");
    // SAFETY: the mutex above, whose owner has exited. (trylock: had the
    // kernel not marked the owner dead, a lock would wait for ever.)
    unsafe {
        assert_eq!(libc::pthread_mutex_trylock(mutex as *mut _), libc::EOWNERDEAD);
        assert_eq!(libc::pthread_mutex_consistent(mutex as *mut _), 0);
        assert_eq!(libc::pthread_mutex_unlock(mutex as *mut _), 0);
    }
}

/// glibc frees a thread's priority-protect buffer (`tpp`) with it: raw
/// threads that lock a `PTHREAD_PRIO_PROTECT` mutex leave nothing in
/// malloc (before, 416 bytes each).
#[test]
fn priority_protect_buffers_are_freed() {
    const TEST: &str = "priority_protect_buffers_are_freed";
    const THREADS: usize = 2_000;
    if !in_child(TEST) {
        return assert_child_passed(&run_child(TEST, &[]));
    }
    unsafe extern "C" {
        fn pthread_mutexattr_setprioceiling(attr: *mut libc::pthread_mutexattr_t, ceiling: libc::c_int) -> libc::c_int;
    }
    fn lock_protected() {
        // SAFETY: a mutex and attributes of ours, initialised, used and
        // destroyed here; the lock may fail (no right to the ceiling),
        // after glibc has made the thread's buffer.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let mut mutex: libc::pthread_mutex_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setprotocol(&mut attr, libc::PTHREAD_PRIO_PROTECT);
            pthread_mutexattr_setprioceiling(&mut attr, libc::sched_get_priority_min(libc::SCHED_FIFO));
            libc::pthread_mutex_init(&mut mutex, &attr);
            if libc::pthread_mutex_lock(&mut mutex) == 0 {
                libc::pthread_mutex_unlock(&mut mutex);
            }
            libc::pthread_mutex_destroy(&mut mutex);
        }
    }
    for _ in 0..50 {
        rawthread::spawn(lock_protected).join().unwrap();
    }
    let before = common::malloc_in_use();
    for _ in 0..THREADS {
        rawthread::spawn(lock_protected).join().unwrap();
    }
    let grown = common::malloc_in_use().saturating_sub(before);
    assert!(grown < 64 << 10, "malloc in use grew by {grown} B over {THREADS} threads");
}

/// glibc puts a thread's vDSO `getrandom` state back in its pool when the
/// thread exits (glibc 2.41 and later): raw threads that call `getrandom`
/// hand theirs on, so that a burst of them leaves no mapping behind, even
/// with every region unmapped after its thread.
#[test]
fn getrandom_states_are_handed_on() {
    const TEST: &str = "getrandom_states_are_handed_on";
    const THREADS: usize = 10_000;
    if !in_child(TEST) {
        return assert_child_passed(&run_child(TEST, &[]));
    }
    fn random() -> u64 {
        let mut v = 0u64;
        // SAFETY: 8 bytes of ours.
        unsafe { libc::getrandom((&raw mut v).cast::<c_void>(), 8, 0) };
        v
    }
    rawthread::set_pool_limits(rawthread::PoolLimits { regions: 0, bytes: 0 });
    for _ in 0..50 {
        rawthread::Builder::new().stack_size(64 << 10).spawn(random).unwrap().join().unwrap();
    }
    let (maps, rss) = (common::maps(), common::rss());
    for _ in 0..THREADS {
        rawthread::Builder::new().stack_size(64 << 10).spawn(random).unwrap().join().unwrap();
    }
    let (grown_maps, grown_rss) = (common::maps().saturating_sub(maps), common::rss().saturating_sub(rss));
    println!("{THREADS} threads: mappings +{grown_maps}, RSS +{grown_rss} B");
    assert!(grown_maps <= 2, "mappings grew by {grown_maps} over {THREADS} threads (RSS +{grown_rss} B)");
}

/// glibc clears a thread's rseq area before registering it: a raw thread
/// on a reused region starts with a clean area, whatever the last thread
/// (or anybody) left in it. Since glibc 2.41 the area lies below the
/// thread pointer, outside the TCB.
#[test]
fn rseq_area_starts_clean_on_a_reused_region() {
    const TEST: &str = "rseq_area_starts_clean_on_a_reused_region";
    if !in_child(TEST) {
        return assert_child_passed(&run_child(TEST, &[]));
    }
    unsafe extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    // SAFETY: glibc's public constants.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        println!("glibc registers no rseq here: nothing to check");
        return;
    }
    let first = rawthread::spawn(|| ());
    let area = first.layout().tcb.start.wrapping_add_signed(offset);
    let region = first.layout().region;
    first.join().unwrap();
    // The last thread's leftovers: a critical-section pointer and flags
    // (the kernel reads neither until the area is registered again; this
    // machine's kernel clears a stale rseq_cs, older ones act on it).
    // SAFETY: the pooled region is mapped and no thread runs on it.
    unsafe {
        *((area + 8) as *mut u64) = 0x7ead_0000;
        *((area + 16) as *mut u32) = 0x5a5a_0000;
    }
    let second = rawthread::spawn(move || {
        // SAFETY: our own registered area: rseq_cs and flags, which only
        // the thread itself writes (the kernel may clear rseq_cs).
        unsafe { (*((area + 8) as *const u64), *((area + 16) as *const u32)) }
    });
    assert_eq!(second.layout().region, region, "the region was not reused");
    assert_eq!(second.join().unwrap(), (0, 0), "the new thread started with the last one's rseq_cs, flags");
}
