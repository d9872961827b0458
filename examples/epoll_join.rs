//! Joins awaited in an event loop: each thread is spawned with a pidfd
//! (`Builder::pidfd`, Linux 6.9's `PIDFD_THREAD`), which `epoll` reports
//! readable once the thread has exited. One loop, on one thread, waits for
//! all of them and joins each as it ends, in the order they end; no thread
//! sits blocked in `join`, and no join waits once its pidfd is ready.
//!
//!     cargo run --example epoll_join

use std::io;
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::{Duration, Instant};

/// What each worker sleeps, in the order they are spawned: they end in
/// another order.
const NAPS_MS: [u64; 4] = [40, 10, 30, 20];

pub fn main() -> io::Result<()> {
    // SAFETY: epoll_create1 has no preconditions.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    let start = Instant::now();
    let mut workers = Vec::new();
    for (i, nap) in NAPS_MS.into_iter().enumerate() {
        let handle = rawthread::Builder::new().pidfd(true).spawn(move || {
            std::thread::sleep(Duration::from_millis(nap));
            nap * 100
        })?;
        // The event carries the worker's index back to the loop.
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        let fd = handle.pidfd().expect("spawned with a pidfd").as_raw_fd();
        // SAFETY: valid fds and event; epoll copies the event.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        println!("spawned worker {i} (tid {}), sleeping {nap} ms", handle.tid());
        workers.push(Some(handle));
    }

    let mut left = workers.len();
    while left > 0 {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: room for `ready.len()` events; no timeout.
        let n = unsafe { libc::epoll_wait(epoll, ready.as_mut_ptr(), ready.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &ready[..n as usize] {
            let i = event.u64 as usize;
            let handle = workers[i].take().expect("each pidfd is ready once: its handle is joined then");
            // Readable means exited: the tid word is already clear.
            assert!(handle.is_finished());
            // Out of the set before the join closes the pidfd: a close
            // alone would leave it there while a copy of the fd lives on
            // (in a process forked meanwhile), to be reported again.
            let fd = handle.pidfd().expect("spawned with a pidfd").as_raw_fd();
            // SAFETY: valid fds; DEL ignores the event.
            if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let result = handle.join().expect("the worker panicked");
            println!("{:>6.1} ms: worker {i} joined, returned {result}", start.elapsed().as_secs_f64() * 1e3);
            left -= 1;
        }
    }
    // SAFETY: our own epoll fd, closed once.
    unsafe { libc::close(epoll) };
    println!("every worker joined from one event loop, in the order they ended");
    Ok(())
}
