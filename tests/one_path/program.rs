// An ordinary program written against `thread::` paths only: included by
// tests/one_path.rs twice, once with `use std::thread as thread;` and once
// with `use rawthread as thread;`. It must compile and pass under both.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

thread_local!(static COUNT: Cell<u32> = const { Cell::new(0) });

fn bump(key: &'static thread::LocalKey<Cell<u32>>) -> u32 {
    key.with(|c| {
        c.set(c.get() + 1);
        c.get()
    })
}

/// A channel-fed pool of named workers that squares numbers.
fn worker_pool(jobs: &[u64]) -> u64 {
    let (tx, rx) = mpsc::channel::<u64>();
    let rx = Arc::new(Mutex::new(rx));
    let (done_tx, done_rx) = mpsc::channel();
    let n = thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    let workers: Vec<thread::JoinHandle<()>> = (0..n)
        .map(|i| {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .stack_size(256 << 10)
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap().recv();
                        match job {
                            Ok(x) => done_tx.send(x * x).unwrap(),
                            Err(_) => break,
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for &job in jobs {
        tx.send(job).unwrap();
    }
    drop(tx);
    let sum = jobs.iter().map(|_| done_rx.recv().unwrap()).sum();
    for w in workers {
        w.join().unwrap();
    }
    sum
}

pub fn run() {
    // A result, and a panic, through thread::Result.
    let handle: thread::JoinHandle<u32> = thread::spawn(|| 6 * 7);
    let result: thread::Result<u32> = handle.join();
    assert_eq!(result.unwrap(), 42);
    let result: thread::Result<()> = thread::spawn(|| std::panic::resume_unwind(Box::new("quiet"))).join();
    assert!(result.is_err());

    // park/unpark through JoinHandle::thread(), ThreadId.
    let ready = Arc::new(AtomicBool::new(false));
    let handle = {
        let ready = ready.clone();
        thread::spawn(move || {
            while !ready.load(Ordering::Acquire) {
                thread::park();
            }
            thread::current().id()
        })
    };
    let id: thread::ThreadId = handle.thread().id();
    assert_ne!(id, thread::current().id());
    ready.store(true, Ordering::Release);
    let me: &thread::Thread = handle.thread();
    me.unpark();
    assert_eq!(handle.join().unwrap(), id);

    // park_timeout, sleep, yield_now, panicking.
    let start = Instant::now();
    thread::park_timeout(Duration::from_millis(1));
    thread::sleep(Duration::from_millis(2));
    thread::yield_now();
    assert!(start.elapsed() >= Duration::from_millis(2));
    assert!(!thread::panicking());

    // thread_local! through LocalKey, fresh in each thread; AccessError.
    assert_eq!(bump(&COUNT), 1);
    assert_eq!(thread::spawn(|| bump(&COUNT) + bump(&COUNT)).join().unwrap(), 3);
    let value: Result<u32, thread::AccessError> = COUNT.try_with(|c| c.get());
    assert_eq!(value.unwrap(), 1);

    // Scoped threads borrowing from the stack.
    let numbers = [1, 2, 3];
    let mut extra = Vec::new();
    let extra_ref = &mut extra;
    let total = thread::scope(|s: &thread::Scope<'_, '_>| {
        let sum: thread::ScopedJoinHandle<'_, i32> = s.spawn(|| numbers.iter().sum());
        let id = sum.thread().id();
        let (sum, seen) = (sum.join().unwrap(), id);
        assert_ne!(seen, thread::current().id());
        thread::Builder::new().name("scoped".into()).spawn_scoped(s, move || extra_ref.push(sum)).unwrap();
        sum
    });
    assert_eq!((total, extra), (6, vec![6]));

    // Builder::spawn_unchecked with a borrow joined before it ends.
    let local = 5;
    let borrowed = &local;
    // SAFETY: joined below, while `local` lives.
    let handle = unsafe { thread::Builder::new().spawn_unchecked(move || *borrowed + 1) }.unwrap();
    assert_eq!(handle.join().unwrap(), 6);

    // is_finished, then a worker pool.
    let handle = thread::spawn(|| ());
    while !handle.is_finished() {
        thread::yield_now();
    }
    handle.join().unwrap();
    assert_eq!(worker_pool(&(1..=100).collect::<Vec<u64>>()), (1..=100u64).map(|x| x * x).sum());
}
