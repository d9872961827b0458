//! `rawthread::scope`: scoped threads borrow from the caller's stack, and
//! the scope joins them all, reports their panics as `std::thread::scope`
//! does and returns the closure's value.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;

mod common;

use common::{EXPECTED, gettid, quiet_expected_panics};

/// The message of a panic payload that is a `&str` or a `String`.
fn message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

#[test]
fn scoped_threads_borrow_stack_data() {
    let mut log = vec![1, 2, 3];
    let data: Vec<u64> = (1..=100).collect();
    let mut counts = [0usize; 4];
    let total = rawthread::scope(|s| {
        // One thread mutates through &mut...
        s.spawn(|| log.extend([4, 5, 6]));
        // ...several read shared slices...
        let sums: Vec<_> = data.chunks(25).map(|chunk| s.spawn(move || chunk.iter().sum::<u64>())).collect();
        // ...and others each write their own element of a borrowed array.
        for (i, c) in counts.iter_mut().enumerate() {
            s.spawn(move || *c = (i + 1) * 10);
        }
        sums.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(total, 5050);
    assert_eq!(log, [1, 2, 3, 4, 5, 6]);
    assert_eq!(counts, [10, 20, 30, 40]);
}

#[test]
fn scope_returns_the_closure_value() {
    let words = ["raw", "threads"];
    let joined: String = rawthread::scope(|s| {
        let handles: Vec<_> = words.iter().map(|w| s.spawn(move || w.to_uppercase())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>().join(" ")
    });
    assert_eq!(joined, "RAW THREADS");
    // A result may borrow from the environment.
    let text = String::from("borrowed result");
    let word: &str = rawthread::scope(|s| s.spawn(|| text.split(' ').next().unwrap()).join().unwrap());
    assert_eq!(word, "borrowed");
}

#[test]
fn unjoined_panicking_thread_makes_scope_panic() {
    quiet_expected_panics();
    let finished = AtomicUsize::new(0);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        rawthread::scope(|s| {
            s.spawn(|| panic!("{EXPECTED}: unjoined scoped thread"));
            s.spawn(|| finished.fetch_add(1, Ordering::SeqCst));
            "value"
        })
    }));
    let payload = result.expect_err("scope did not panic");
    assert_eq!(message(&*payload), Some("a scoped thread panicked"));
    // The healthy thread still ran to the end before scope panicked.
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

#[test]
fn joined_panicking_thread_gives_err_and_scope_returns() {
    quiet_expected_panics();
    let value = rawthread::scope(|s| {
        let h = s.spawn(|| -> u32 { panic!("{EXPECTED}: joined scoped thread {}", 1) });
        let err = h.join().unwrap_err();
        assert_eq!(message(&*err), Some("expected panic: joined scoped thread 1"));
        let ok = s.spawn(|| 41);
        ok.join().unwrap() + 1
    });
    assert_eq!(value, 42);
}

#[test]
fn panic_in_scope_closure_resumes_after_threads_finish() {
    quiet_expected_panics();
    let done = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<()>();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let done = &done;
        rawthread::scope(|s| {
            s.spawn(move || {
                // Runs on after the closure panicked: held until released.
                rx.recv().unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            });
            tx.send(()).unwrap();
            panic!("expected panic: in the scope closure");
        })
    }));
    let payload = result.expect_err("the closure's panic was lost");
    assert_eq!(message(&*payload), Some("expected panic: in the scope closure"));
    assert_eq!(done.load(Ordering::SeqCst), 1, "scope unwound before its thread finished");
}

#[test]
fn spawn_scoped_with_a_name() {
    let prefix = String::from("scoped");
    let (label, comm, tid) = rawthread::scope(|s| {
        let h = rawthread::Builder::new()
            .name("scoped-worker".into())
            .spawn_scoped(s, || {
                let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", gettid())).unwrap();
                (format!("{prefix}-worker"), comm, gettid())
            })
            .unwrap();
        let handle_tid = h.tid();
        let result = h.join().unwrap();
        assert_eq!(result.2, handle_tid);
        result
    });
    assert_eq!(label, "scoped-worker");
    assert_eq!(comm, "scoped-worker\n");
    assert_ne!(tid, gettid());
}

#[test]
fn spawn_scoped_error_leaves_the_scope_usable() {
    let touched = AtomicBool::new(false);
    let value = rawthread::scope(|s| {
        let err = rawthread::Builder::new()
            .stack_size(usize::MAX)
            .spawn_scoped(s, || touched.store(true, Ordering::SeqCst))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        // A failed spawn is not counted: the scope neither hangs nor panics.
        s.spawn(|| 7).join().unwrap()
    });
    assert_eq!(value, 7);
    assert!(!touched.load(Ordering::SeqCst));
}

#[test]
fn scope_waits_for_threads_whose_handles_were_dropped_or_forgotten() {
    let mut a = 0;
    let mut b = 0;
    let (tx, rx) = mpsc::channel::<()>();
    let (tx_b, rx_b) = mpsc::channel::<()>();
    rawthread::scope(|s| {
        let a = &mut a;
        let dropped = s.spawn(move || {
            rx.recv().unwrap();
            *a = 1;
        });
        drop(dropped);
        let b = &mut b;
        let forgotten = s.spawn(move || {
            rx_b.recv().unwrap();
            // Dawdle: a scope that did not wait for this closure would be
            // long gone by the time it writes.
            for _ in 0..1000 {
                thread::yield_now();
            }
            *b = 2;
        });
        std::mem::forget(forgotten);
        // Release both threads only after their handles are gone.
        tx.send(()).unwrap();
        tx_b.send(()).unwrap();
    });
    assert_eq!((a, b), (1, 2));
}

/// A scoped thread's result that records when it is dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn scope_drops_unjoined_results_before_returning() {
    let drops = AtomicUsize::new(0);
    rawthread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| Counted(&drops));
        }
        let joined = s.spawn(|| Counted(&drops)).join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(joined);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

/// A result that holds another thread's handle: dropping it (unjoined)
/// hands that handle to the scope after the scope's first sweep; the scope
/// must join that thread and drop its result too before it returns.
#[test]
fn handles_inside_unjoined_results_are_joined_too() {
    for _ in 0..500 {
        let drops = AtomicUsize::new(0);
        rawthread::scope(|s| {
            let inner = s.spawn(|| Counted(&drops));
            s.spawn(move || inner);
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the inner result was dropped after scope returned");
    }
}

#[test]
fn nested_scopes_owned_by_scoped_threads() {
    // Each inner scope's owner, which parks until its threads are done, is
    // itself a raw thread.
    let mut grid = [[0u32; 4]; 3];
    rawthread::scope(|s| {
        for (r, row) in grid.iter_mut().enumerate() {
            s.spawn(move || {
                rawthread::scope(|inner| {
                    for (c, cell) in row.iter_mut().enumerate() {
                        inner.spawn(move || *cell = (r * 10 + c) as u32);
                    }
                });
                // The inner scope has joined every cell's thread.
                assert!(row.iter().enumerate().all(|(c, &v)| v == (r * 10 + c) as u32));
            });
        }
    });
    assert_eq!(grid, [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]);
}

#[test]
fn scoped_is_finished_and_tid() {
    let seen = Mutex::new(0);
    rawthread::scope(|s| {
        // The sender is the scope closure's: should an assertion below
        // fail, unwinding drops it and the thread is not left waiting.
        let (tx, rx) = mpsc::channel::<u32>();
        let seen = &seen;
        let h = s.spawn(move || {
            *seen.lock().unwrap() = gettid();
            rx.recv().unwrap() * 2
        });
        assert!(!h.is_finished(), "finished while blocked on a channel");
        assert!(h.tid() > 0 && h.tid() != gettid());
        tx.send(21).unwrap();
        while !h.is_finished() {
            thread::yield_now();
        }
        let tid = h.tid();
        assert_eq!(h.join().unwrap(), 42);
        assert_eq!(*seen.lock().unwrap(), tid);
    });
}

#[test]
fn many_scoped_threads_with_a_shared_counter() {
    let counter = AtomicUsize::new(0);
    let owner = thread::current().id();
    rawthread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                assert_ne!(thread::current().id(), owner);
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 32);
}
