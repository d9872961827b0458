//! The classic clone "Hello world" pair, written with rawthread: a thread
//! shares the process (same pid, a new tid, the same memory), a process is
//! a copy (a new pid, its own memory) that returns a status to its parent.
//!
//!     cargo run --example hello
//!     strace -f -e clone3,clone,exit,exit_group,wait4,waitid cargo run --example hello

use std::sync::atomic::{AtomicU32, Ordering};

static SHARED: AtomicU32 = AtomicU32::new(0);

pub fn main() -> std::io::Result<()> {
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    println!("parent: pid {pid}, tid {tid}");

    let thread = rawthread::spawn(|| {
        // SAFETY: as above.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        println!("thread: pid {pid} (the same), tid {tid} (its own)");
        SHARED.store(1, Ordering::SeqCst);
    });
    thread.join().expect("the thread panicked");
    println!("parent: the thread's write is visible here: SHARED = {}", SHARED.load(Ordering::SeqCst));

    let mut process = rawthread::process::spawn(|| {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        // After a clone without CLONE_VM only async-signal-safe calls are
        // safe in general; here no other thread can hold stdout's lock.
        println!("process: pid {pid} (a new one)");
        SHARED.store(2, Ordering::SeqCst);
        42
    })?;
    let status = process.wait()?;
    println!(
        "parent: process {} exited with {:?}; its write stayed in its copy: SHARED = {}",
        process.pid(),
        status.code(),
        SHARED.load(Ordering::SeqCst)
    );
    assert_eq!(status.code(), Some(42));
    Ok(())
}
