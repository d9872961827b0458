//! glibc counts its threads, and the last one to leave ends the process
//! with `exit(0)`: after `main` calls `pthread_exit`, the process lives on
//! while raw threads work, and ends when the last of them returns.
//!
//! `main` must be the process's real first thread, which libtest's harness
//! does not give a test, so this binary has no harness: it runs the
//! scenario in a child copy of itself and checks what that printed.

#![no_main]

use std::process::Command;

const CHILD: &str = "RAWTHREAD_LAST_THREAD_CHILD";

/// Whether the thread `tid` of this process has exited (a zombie, as the
/// main thread is after `pthread_exit` while others live).
fn exited(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// The child: a raw thread that waits for `main` to be gone, then prints.
fn scenario() -> ! {
    // SAFETY: getpid has no preconditions.
    let main = unsafe { libc::getpid() };
    drop(rawthread::spawn(move || {
        while !exited(main) {
            std::thread::yield_now();
        }
        println!("the raw thread outlived main");
    }));
    // SAFETY: the process's first thread leaves; nothing of ours is on
    // its stack but this frame, which has nothing to drop.
    unsafe { libc::pthread_exit(std::ptr::null_mut()) }
}

#[unsafe(no_mangle)]
pub extern "C-unwind" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    if std::env::var_os(CHILD).is_some() {
        scenario();
    }
    let out = Command::new(std::env::current_exe().unwrap()).env(CHILD, "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let passed = out.status.code() == Some(0) && stdout.contains("the raw thread outlived main");
    if !passed {
        eprintln!("child: {}\nstdout:\n{stdout}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    println!("test main_pthread_exit_leaves_raw_threads_running ... {}", if passed { "ok" } else { "FAILED" });
    println!("{} passed, {} failed", passed as u8, !passed as u8);
    if passed { 0 } else { 1 }
}
