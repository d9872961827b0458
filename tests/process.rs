//! `rawthread::process`: a closure in a new process, waited for.
//!
//! A process made by a bare `clone3` from a multi-threaded parent must keep
//! to async-signal-safe calls (another thread may have held malloc's or
//! stdio's lock), yet these tests' processes allocate and panic. So every
//! test's body runs in a child process of this test binary that has one
//! thread, and asserts that first.
//!
//! A libtest child is not that process: even with `--test-threads=1`
//! libtest runs each test on a thread of its own, named after the test,
//! while its main thread waits for the result (`run_test` in libtest's
//! `lib.rs`), so `/proc/self/task` lists two. The child half therefore runs
//! before `main`, from `.init_array` ([`run_child_before_main`]): when
//! `RAWTHREAD_CHILD` names a test of this file, its body runs on the only
//! thread there is and the process exits before libtest starts.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{CHILD_ENV, in_child, refuse_syscalls, run_child, tasks};
use rawthread::process;

/// Each test's body, by test name: run by [`run_child_before_main`] in the
/// child that [`run_single_threaded`] starts.
const BODIES: &[(&str, fn())] = &[
    ("exit_code_pid_and_copied_memory", exit_code_pid_and_copied_memory_body),
    ("panic_and_signal_statuses", panic_and_signal_statuses_body),
    ("new_session_and_process_group", new_session_and_process_group_body),
    ("processes_from_raw_threads", processes_from_raw_threads_body),
    ("legacy_clone_fallback", legacy_clone_fallback_body),
];

/// What the child prints, followed by the test's name, when the body passed.
const PASSED: &str = "single-threaded child passed: ";

/// Called by glibc, like every `.init_array` entry, before `main`: libtest
/// has started no thread yet.
// SAFETY: `.init_array` holds pointers to functions glibc calls once, after
// libc and every shared library are initialised, with (argc, argv, envp),
// which an `extern "C" fn()` ignores. What the function uses before `main`
// (the environment, /proc, stdout, panics caught in it, `exit`) needs
// nothing of std's `main`-time set-up.
#[used]
#[unsafe(link_section = ".init_array")]
static RUN_CHILD_BEFORE_MAIN: extern "C" fn() = run_child_before_main;

/// In the child run of one of [`BODIES`]: asserts that this is the
/// process's only thread, runs the body, and exits (0 if it passed, 101 if
/// it panicked: the panic message is on stderr). Otherwise returns, and
/// libtest's `main` runs as usual.
extern "C" fn run_child_before_main() {
    let Some(&(test, body)) = BODIES.iter().find(|(test, _)| in_child(test)) else { return };
    let passed = std::panic::catch_unwind(|| {
        let threads = tasks();
        assert_eq!(threads, 1, "the child runs with {threads} threads, not alone");
        body();
    })
    .is_ok();
    if passed {
        println!("{PASSED}{test}");
    }
    std::process::exit(if passed { 0 } else { 101 });
}

/// Runs `test`'s body in a single-threaded child process of this binary and
/// asserts that it passed, showing its output if not.
fn run_single_threaded(test: &str) {
    let out = run_child(test, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let passed = format!("{PASSED}{test}");
    assert!(
        stdout.lines().any(|l| l == passed),
        "the child did not run {test} before main ({CHILD_ENV}):\n{stdout}\nstderr:\n{stderr}"
    );
}

/// The child's exit code is the closure's return value; it has a pid of its
/// own, is the caller's child, runs on a copy of the caller's memory (its
/// changes are not seen by the caller), and a second `wait` returns the
/// same status. A pidfd exactly when `clone3` made it.
#[test]
fn exit_code_pid_and_copied_memory() {
    run_single_threaded("exit_code_pid_and_copied_memory");
}

fn exit_code_pid_and_copied_memory_body() {
    let parent = std::process::id() as i32;
    let mut data = vec![1, 2, 3];
    let data_ptr = &raw mut data;
    let mut child = process::spawn(|| {
        // SAFETY: getpid/getppid have no preconditions.
        let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        // The child has its own copy of the parent's memory.
        // SAFETY: the child's copy of `data`, which the parent no longer
        // touches in this process.
        let copy = unsafe { &mut *data_ptr };
        copy.push(4);
        if pid != parent && ppid == parent && copy.len() == 4 { 42 } else { 1 }
    })
    .unwrap();
    assert_ne!(child.pid(), parent);
    assert_eq!(child.pidfd().is_some(), rawthread::uses_clone3() == Some(true));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    assert_eq!(child.wait().unwrap(), status, "a second wait returns the same status");
    assert_eq!(data, [1, 2, 3], "the parent's memory is its own");
}

/// A closure that panics ends its process with exit code 101; a process
/// killed by a signal reports that signal.
#[test]
fn panic_and_signal_statuses() {
    run_single_threaded("panic_and_signal_statuses");
}

fn panic_and_signal_statuses_body() {
    let mut child = process::spawn(|| panic!("in the child")).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(101));
    let mut child = process::spawn(|| {
        // SAFETY: ends this (child) process with SIGKILL.
        unsafe { libc::raise(libc::SIGKILL) };
        0
    })
    .unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

/// `setsid(true)` makes the child lead a new session and process group;
/// `process_group(0)` a new group; joining a group of another session fails
/// with the child's `EPERM`.
#[test]
fn new_session_and_process_group() {
    run_single_threaded("new_session_and_process_group");
}

fn new_session_and_process_group_body() {
    let mut child = process::Builder::new()
        .setsid(true)
        // SAFETY: getpid/getsid/getpgid have no preconditions.
        .spawn(|| unsafe { i32::from(libc::getsid(0) == libc::getpid() && libc::getpgid(0) == libc::getpid()) })
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));

    let mut child = process::Builder::new()
        .process_group(0)
        // SAFETY: getpgid/getpid have no preconditions.
        .spawn(|| unsafe { i32::from(libc::getpgid(0) == libc::getpid()) })
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));

    // A group in another session cannot be joined: EPERM from the child.
    // SAFETY: getpgid/getsid have no preconditions.
    let init_group = unsafe { libc::getpgid(1) };
    if init_group > 0 && unsafe { libc::getsid(1) != libc::getsid(0) } {
        let e = process::Builder::new().process_group(init_group).spawn(|| 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }
}

/// Processes from raw threads, several at once. The process is alone when
/// the test starts; the raw threads it spawns are alive while they make
/// processes, which is why these processes only return a number.
#[test]
fn processes_from_raw_threads() {
    run_single_threaded("processes_from_raw_threads");
}

fn processes_from_raw_threads_body() {
    let handles: Vec<_> = (0..4)
        .map(|i| rawthread::spawn(move || process::spawn(move || 10 + i).unwrap().wait().unwrap().code()))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Some(10 + i as i32));
    }
}

/// With `clone3` refused the legacy `clone(SIGCHLD)` makes the process; it
/// has no pidfd and is waited for by pid.
#[test]
fn legacy_clone_fallback() {
    run_single_threaded("legacy_clone_fallback");
}

fn legacy_clone_fallback_body() {
    refuse_syscalls(&[(libc::SYS_clone3, libc::ENOSYS)]);
    let mut child = process::spawn(|| 9).unwrap();
    assert!(child.pidfd().is_none());
    assert_eq!(child.wait().unwrap().code(), Some(9));
    assert_eq!(rawthread::uses_clone3(), Some(false));
}
