//! `rawthread::process`: a closure in a new process, waited for.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{in_child, refuse_syscalls, run_child_ok};
use rawthread::process;

#[test]
fn exit_code_pid_and_copied_memory() {
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

#[test]
fn panic_and_signal_statuses() {
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

#[test]
fn new_session_and_process_group() {
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

/// Processes from raw threads, several at once.
#[test]
fn processes_from_raw_threads() {
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
    if in_child("legacy_clone_fallback") {
        refuse_syscalls(&[(libc::SYS_clone3, libc::ENOSYS)]);
        let mut child = process::spawn(|| 9).unwrap();
        assert!(child.pidfd().is_none());
        assert_eq!(child.wait().unwrap().code(), Some(9));
        assert_eq!(rawthread::uses_clone3(), Some(false));
        return;
    }
    run_child_ok("legacy_clone_fallback");
}
