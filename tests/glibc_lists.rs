//! Raw threads on glibc's own thread list: `setuid` and its kin change
//! every raw thread's credentials, `dlopen` of a library with initial-exec
//! TLS initialises it in raw threads, `dlclose` waits for raw threads
//! inside a symbol lookup, `fork` keeps all of it working on both sides,
//! and gdb sees raw threads as threads. Each test runs in a child process;
//! the credential tests need root and say so when skipped.

mod common;

use std::ffi::{CString, c_void};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use common::*;

/// The user and group a privilege drop goes to.
const NOBODY: u32 = 65534;

/// A thread's credentials as the kernel has them for that very thread:
/// raw system calls, not glibc's wrappers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Creds {
    uid: [u32; 3],
    gid: [u32; 3],
    groups: Vec<u32>,
}

fn creds() -> Creds {
    let (mut uid, mut gid) = ([0u32; 3], [0u32; 3]);
    let mut groups = vec![0u32; 256];
    // SAFETY: valid out-pointers; the group list has room for 256.
    let n = unsafe {
        let [u, g] = [uid.as_mut_ptr(), gid.as_mut_ptr()];
        libc::syscall(libc::SYS_getresuid, u, u.add(1), u.add(2));
        libc::syscall(libc::SYS_getresgid, g, g.add(1), g.add(2));
        libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr())
    };
    groups.truncate(n as usize);
    Creds { uid, gid, groups }
}

fn euid() -> u32 {
    creds().uid[1]
}

/// Asserts a libc call's zero return.
fn ok(ret: libc::c_int, what: &str) {
    assert_eq!(ret, 0, "{what}: {}", std::io::Error::last_os_error());
}

// The credential calls, made through glibc as a program makes them. None
// has a memory precondition but setgroups' list, passed as a slice.
fn seteuid(uid: u32) {
    // SAFETY: see above.
    ok(unsafe { libc::seteuid(uid) }, "seteuid");
}
fn setegid(gid: u32) {
    // SAFETY: see above.
    ok(unsafe { libc::setegid(gid) }, "setegid");
}
fn setgroups(groups: &[u32]) {
    // SAFETY: a valid list of `len` groups.
    ok(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }, "setgroups");
}
fn setresuid(r: u32, e: u32, s: u32) {
    // SAFETY: see above.
    ok(unsafe { libc::setresuid(r, e, s) }, "setresuid");
}
fn setresgid(r: u32, e: u32, s: u32) {
    // SAFETY: see above.
    ok(unsafe { libc::setresgid(r, e, s) }, "setresgid");
}
/// The privilege drop a server makes: no groups, then gid, then uid.
fn drop_privileges() {
    setgroups(&[]);
    // SAFETY: see above.
    ok(unsafe { libc::setgid(NOBODY) }, "setgid");
    // SAFETY: see above.
    ok(unsafe { libc::setuid(NOBODY) }, "setuid");
}

/// Whether this process is `test`'s child half, which runs its body; in
/// the test's own process, runs that child and asserts that it passed.
fn in_child_half(test: &str) -> bool {
    if in_child(test) {
        return true;
    }
    print!("{}", run_child_ok(test));
    false
}

/// [`in_child_half`] for a body that changes credentials: a child that is
/// not root says why it skips the body, and passes.
fn in_root_child_half(test: &str) -> bool {
    if !in_child_half(test) {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("{test}: skipped: changing credentials needs root");
        println!("1 passed");
        return false;
    }
    true
}

type Job = Box<dyn FnOnce() + Send>;

enum Ask {
    Creds(Sender<Creds>),
    Run(Job, Sender<()>),
    Stop,
}

/// A thread that answers questions until told to stop: the same loop on
/// a raw thread, a raw thread's raw thread, a detached raw thread or a
/// std thread.
struct Worker {
    kind: String,
    asks: Sender<Ask>,
    handle: Option<rawthread::JoinHandle<()>>,
}

fn serve(asks: std::sync::mpsc::Receiver<Ask>) {
    for ask in asks {
        match ask {
            Ask::Creds(reply) => reply.send(creds()).unwrap(),
            Ask::Run(job, done) => {
                job();
                done.send(()).unwrap();
            }
            Ask::Stop => return,
        }
    }
}

impl Worker {
    fn raw(kind: &str) -> Worker {
        let (asks, rx) = channel();
        let handle = rawthread::Builder::new().name(kind.into()).spawn(move || serve(rx)).unwrap();
        Worker { kind: kind.into(), asks, handle: Some(handle) }
    }

    /// A raw thread started by another raw thread, which goes on serving.
    fn nested(kind: &str) -> (Worker, Worker) {
        let (made, take) = channel();
        let outer_kind = format!("{kind}-outer");
        let (asks, rx) = channel();
        let inner_kind = kind.to_string();
        let outer = rawthread::Builder::new()
            .spawn(move || {
                made.send(Worker::raw(&inner_kind)).unwrap();
                serve(rx)
            })
            .unwrap();
        (take.recv().unwrap(), Worker { kind: outer_kind, asks, handle: Some(outer) })
    }

    fn detached(kind: &str) -> Worker {
        let mut worker = Worker::raw(kind);
        drop(worker.handle.take());
        worker
    }

    fn std(kind: &str) -> Worker {
        let (asks, rx) = channel();
        std::thread::spawn(move || serve(rx));
        Worker { kind: kind.into(), asks, handle: None }
    }

    fn creds(&self) -> Creds {
        let (reply, answer) = channel();
        self.asks.send(Ask::Creds(reply)).unwrap();
        answer.recv().unwrap()
    }

    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let (done, wait) = channel();
        self.asks.send(Ask::Run(Box::new(job), done)).unwrap();
        wait.recv().unwrap();
    }

    fn stop(mut self) {
        self.asks.send(Ask::Stop).unwrap();
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap();
        }
    }
}

/// Asserts that every worker, and the calling thread, has `want`.
fn all_have(workers: &[Worker], want: &Creds, step: &str) {
    assert_eq!(&creds(), want, "{step}: the calling thread");
    for w in workers {
        assert_eq!(&w.creds(), want, "{step}: the {} thread", w.kind);
    }
}

/// Every credential call glibc makes process-wide, made from the main
/// thread, a std thread and raw threads, reaches every live raw thread:
/// plain, made by another raw thread, detached, on a reused region.
#[test]
fn credential_changes_reach_every_raw_thread() {
    const TEST: &str = "credential_changes_reach_every_raw_thread";
    if !in_root_child_half(TEST) {
        return;
    }
    // A region to reuse, so one worker runs on a renewed block.
    rawthread::spawn(|| ()).join().unwrap();
    let mut workers = vec![Worker::raw("raw"), Worker::detached("detached"), Worker::std("std")];
    let (inner, outer) = Worker::nested("raw-in-raw");
    workers.extend([inner, outer]);
    let root = creds();
    all_have(&workers, &root, "at the start");

    let mut want = root.clone();
    seteuid(NOBODY);
    want.uid[1] = NOBODY;
    all_have(&workers, &want, "seteuid(nobody) on the main thread");

    workers[2].run(|| seteuid(0));
    want.uid[1] = 0;
    all_have(&workers, &want, "seteuid(0) on a std thread");

    workers[0].run(|| setegid(NOBODY));
    want.gid[1] = NOBODY;
    all_have(&workers, &want, "setegid(nobody) on a raw thread");

    workers[3].run(|| setgroups(&[4, 5, 6]));
    want.groups = vec![4, 5, 6];
    all_have(&workers, &want, "setgroups on a raw thread's raw thread");

    workers[1].run(|| setresuid(1000, 1001, 0));
    want.uid = [1000, 1001, 0];
    all_have(&workers, &want, "setresuid on a detached raw thread");

    // Back to root (the saved uid allows it), then a thread made now
    // inherits what its creator has.
    setresuid(0, 0, 0);
    setresgid(0, 0, 0);
    want.uid = [0; 3];
    want.gid = [0; 3];
    workers.push(Worker::raw("late"));
    all_have(&workers, &want, "setresuid/setresgid(0) on the main thread");

    // The privilege drop a server makes, on the main thread.
    drop_privileges();
    let dropped = Creds { uid: [NOBODY; 3], gid: [NOBODY; 3], groups: vec![] };
    all_have(&workers, &dropped, "the privilege drop");
    // And it is for good: no raw thread can take root back.
    // SAFETY: see seteuid.
    workers[0].run(|| assert_ne!(unsafe { libc::setuid(0) }, 0, "a raw thread took root back"));

    for w in workers {
        w.stop();
    }
    println!("{TEST}: 6 raw threads and a std thread followed 7 credential changes");
    println!("1 passed");
}

/// 300 `seteuid` flips while another thread spawns, joins and detaches raw
/// threads: no hang, no crash, and after each flip every raw thread alive,
/// however new, has the new euid.
#[test]
fn seteuid_flips_under_spawn_churn() {
    const TEST: &str = "seteuid_flips_under_spawn_churn";
    if !in_root_child_half(TEST) {
        return;
    }
    let window: Arc<Mutex<Vec<Worker>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The churn says when its first round is done, and the flips start
    // only then: from the first flip on, the window holds a churned thread.
    let (churning, first_round) = channel();
    let churn = {
        let (window, stop) = (window.clone(), stop.clone());
        let mut churning = Some(churning);
        rawthread::spawn(move || {
            let mut made = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let worker =
                    if made.is_multiple_of(3) { Worker::detached("churn-detached") } else { Worker::raw("churn") };
                let oldest = {
                    let mut window = window.lock().unwrap();
                    window.push(worker);
                    (window.len() > 8).then(|| window.remove(0))
                };
                if let Some(oldest) = oldest {
                    oldest.stop();
                }
                // Short-lived threads too, joined at once.
                rawthread::spawn(euid).join().unwrap();
                made += 1;
                // Sent, then dropped: should the churn die first, the wait
                // below ends instead of hanging.
                if let Some(churning) = churning.take() {
                    churning.send(()).unwrap();
                }
            }
            made
        })
    };
    first_round.recv().expect("the churn died in its first round");
    let long = Worker::raw("long-lived");
    for flip in 0..300 {
        let to = if flip % 2 == 0 { NOBODY } else { 0 };
        // The real and saved uids stay 0, so every flip is allowed.
        seteuid(to);
        assert_eq!(euid(), to);
        assert_eq!(long.creds().uid[1], to, "flip {flip}: the long-lived raw thread");
        for w in window.lock().unwrap().iter() {
            assert_eq!(w.creds().uid[1], to, "flip {flip}: a {} thread", w.kind);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let made = churn.join().unwrap();
    for w in std::mem::take(&mut *window.lock().unwrap()) {
        w.stop();
    }
    long.stop();
    assert!(made > 0);
    println!("{TEST}: 300 flips, {made} raw threads churned around them");
    println!("1 passed");
}

/// fork() from a raw thread: in the child, raw threads it starts follow a
/// privilege drop; in the parent, all raw threads (the forking one too)
/// follow one made after the fork.
#[test]
fn fork_from_a_raw_thread_then_setuid_on_both_sides() {
    const TEST: &str = "fork_from_a_raw_thread_then_setuid_on_both_sides";
    if !in_root_child_half(TEST) {
        return;
    }
    let dropped = Creds { uid: [NOBODY; 3], gid: [NOBODY; 3], groups: vec![] };
    let bystander = Worker::raw("bystander");
    let forker = Worker::raw("forker");
    let (status_tx, status_rx) = channel();
    let child_wants = dropped.clone();
    forker.run(move || {
        // SAFETY: the child only spawns raw threads, changes credentials
        // and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let child_workers = [Worker::raw("child-a"), Worker::detached("child-b")];
            drop_privileges();
            let good = creds() == child_wants && child_workers.iter().all(|w| w.creds() == child_wants);
            // SAFETY: ends the child without running the parent's atexit.
            unsafe { libc::_exit(if good { 0 } else { 1 }) };
        }
        status_tx.send(wait_status(pid)).unwrap();
    });
    let status = status_rx.recv().unwrap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the forked child: status {status:#x}");
    let workers = [bystander, forker, Worker::raw("after-fork")];
    drop_privileges();
    all_have(&workers, &dropped, "setuid in the parent after the fork");
    for w in workers {
        w.stop();
    }
    println!("1 passed");
}

/// Every raw thread is on glibc's `_dl_stack_user` while it lives, plain,
/// detached or scoped, and off it once it has exited.
#[test]
fn raw_threads_are_on_glibc_list_while_they_live() {
    const TEST: &str = "raw_threads_are_on_glibc_list_while_they_live";
    if !in_child_half(TEST) {
        return;
    }
    rawthread::spawn(|| ()).join().unwrap();
    let (base_tasks, base) = (live_tasks(), glibc_user_threads().expect("a sound list"));
    let all = Arc::new(std::sync::Barrier::new(25));
    let joinable: Vec<_> = (0..8)
        .map(|_| {
            let all = all.clone();
            rawthread::spawn(move || {
                all.wait();
                all.wait();
            })
        })
        .collect();
    for _ in 0..8 {
        let all = all.clone();
        drop(rawthread::spawn(move || {
            all.wait();
            all.wait();
        }));
    }
    let listed = rawthread::scope(|s| {
        for _ in 0..8 {
            let all = all.clone();
            s.spawn(move || {
                all.wait();
                all.wait();
            });
        }
        all.wait();
        // Read before the threads may go, asserted after: a wrong count
        // fails the test instead of leaving 24 threads waiting.
        let listed = glibc_user_threads();
        all.wait();
        listed
    });
    assert_eq!(listed, Some(base + 24), "24 raw threads alive");
    joinable.into_iter().for_each(|h| h.join().unwrap());
    // Until the detached threads too are past their last instruction.
    // Tasks that have begun to exit are not counted: a thread joined just
    // before `base_tasks` was read may still have been in /proc/self/task
    // then (the kernel clears the tid word before the task leaves it), and
    // counted there, it would end this wait one thread early.
    while live_tasks() > base_tasks {
        std::thread::yield_now();
    }
    assert_eq!(glibc_user_threads(), Some(base), "every raw thread has exited");
    println!("1 passed");
}

/// After a raw thread forks, glibc in the child takes it back as a thread
/// on a stack of its own, never as a glibc stack: were it among glibc's, a
/// fork from another thread of that child would hand its memory out again
/// as a new pthread's stack and descriptor.
#[test]
fn a_forked_raw_thread_is_never_reused_as_a_glibc_stack() {
    const TEST: &str = "a_forked_raw_thread_is_never_reused_as_a_glibc_stack";
    if !in_child_half(TEST) {
        return;
    }
    // A stack that a std thread's of 3 MiB would fit in.
    let forker = rawthread::Builder::new().stack_size(4 << 20).spawn(|| {
        // SAFETY: no preconditions.
        let me = unsafe { libc::pthread_self() };
        // SAFETY: the child spawns, forks, waits and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let grandchild = std::thread::spawn(move || {
                // SAFETY: as above; the grandchild makes std threads only.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // Alive at once, so that each takes a stack of its own,
                    // sized so that the forked raw thread's would fit best.
                    let all = Arc::new(std::sync::Barrier::new(4));
                    let threads: Vec<_> = (0..4)
                        .map(|_| {
                            let all = all.clone();
                            std::thread::Builder::new()
                                .stack_size(3 << 20)
                                .spawn(move || {
                                    all.wait();
                                    // SAFETY: no preconditions.
                                    unsafe { libc::pthread_self() }
                                })
                                .unwrap()
                        })
                        .collect();
                    let selves: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
                    // SAFETY: ends the grandchild.
                    unsafe { libc::_exit(if selves.contains(&me) { 3 } else { 0 }) };
                }
                wait_status(pid)
            })
            .join()
            .unwrap();
            // SAFETY: ends the child.
            unsafe { libc::_exit(if libc::WIFEXITED(grandchild) { libc::WEXITSTATUS(grandchild) } else { 4 }) };
        }
        wait_status(pid)
    });
    let status = forker.unwrap().join().unwrap();
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_ne!(libc::WEXITSTATUS(status), 3, "a pthread in the grandchild got the forked raw thread's descriptor");
    assert_eq!(libc::WEXITSTATUS(status), 0);
    println!("1 passed");
}

fn wait_status(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// A `rawthread::process` child made while a parent thread held glibc's
/// thread-list lock (as every raw spawn and exit briefly does) can still
/// call `setuid()`: the child frees the lock, as glibc's `fork` does.
#[test]
fn setuid_in_a_process_child_made_while_the_list_lock_was_held() {
    const TEST: &str = "setuid_in_a_process_child_made_while_the_list_lock_was_held";
    if !in_child_half(TEST) {
        return;
    }
    // glibc in multi-threaded mode, so that setuid() signals every thread.
    rawthread::spawn(|| ()).join().unwrap();
    let lock = glibc_thread_list_lock();
    while lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    let child = rawthread::process::spawn(|| {
        // SAFETY: getuid has no preconditions; setuid to one's own uid is
        // allowed to anyone.
        unsafe { libc::setuid(libc::getuid()) }
    });
    let status = child.and_then(|mut c| c.wait());
    lock.store(0, Ordering::Release);
    let status = status.unwrap();
    assert_eq!(status.code(), Some(0), "the child's setuid: {status:?}");
    println!("1 passed");
}

/// The 8 bytes of TLS [`tls_library`] gives its one variable.
const TLS_VALUE: u64 = 0x7261_7774_6872_6561;

/// Writes a shared library with one initial-exec TLS variable,
/// `ietls_value` (initially [`TLS_VALUE`]), and `ietls_slot`, a word the
/// loader fills with that variable's offset from the thread pointer (an
/// `R_X86_64_TPOFF64` relocation, as initial-exec code reads it): the
/// smallest ELF file `dlopen` takes, made here so that the test needs no
/// toolchain and runs in any chroot.
fn tls_library(path: &std::path::Path) {
    const PHDRS: usize = 0x40;
    const DYNSYM: usize = PHDRS + 4 * 56;
    const DYNSTR: usize = DYNSYM + 3 * 24;
    const STRS: &[u8] = b"\0ietls_value\0ietls_slot\0";
    const HASH: usize = DYNSTR + STRS.len();
    const RELA: usize = HASH + 6 * 4;
    const SLOT: usize = RELA + 24;
    const TDATA: usize = SLOT + 8;
    const DYNAMIC: usize = TDATA + 8;
    const DYN_ENTRIES: usize = 10;
    const END: usize = DYNAMIC + DYN_ENTRIES * 16;
    let mut f = Vec::with_capacity(END);
    let u16s = |f: &mut Vec<u8>, v: &[u16]| v.iter().for_each(|x| f.extend(x.to_le_bytes()));
    let u32s = |f: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| f.extend(x.to_le_bytes()));
    let u64s = |f: &mut Vec<u8>, v: &[u64]| v.iter().for_each(|x| f.extend(x.to_le_bytes()));
    // ELF header: 64-bit, little-endian, version 1, ET_DYN, x86-64.
    f.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    u16s(&mut f, &[3, 62]);
    u32s(&mut f, &[1]);
    u64s(&mut f, &[0, PHDRS as u64, 0]); // entry, phoff, shoff
    u32s(&mut f, &[0]); // flags
    u16s(&mut f, &[64, 56, 4, 64, 0, 0]); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    // Program headers: type, flags, offset, vaddr, paddr, filesz, memsz, align.
    let (r, w) = (4u32, 2u32);
    let phdr = |f: &mut Vec<u8>, kind: u32, flags: u32, at: usize, len: usize, align: u64| {
        u32s(f, &[kind, flags]);
        u64s(f, &[at as u64, at as u64, at as u64, len as u64, len as u64, align]);
    };
    phdr(&mut f, 1, r | w, 0, END, 0x1000); // PT_LOAD: the whole file
    phdr(&mut f, 2, r | w, DYNAMIC, DYN_ENTRIES * 16, 8); // PT_DYNAMIC
    phdr(&mut f, 7, r, TDATA, 8, 8); // PT_TLS
    phdr(&mut f, 0x6474_e551, r | w, 0, 0, 16); // PT_GNU_STACK: not executable
    // Symbols: name, info, other, shndx, value, size.
    let sym = |f: &mut Vec<u8>, name: u32, info: u8, value: usize| {
        u32s(f, &[name]);
        f.extend([info, 0]);
        u16s(f, &[if info == 0 { 0 } else { 1 }]);
        u64s(f, &[value as u64, if info == 0 { 0 } else { 8 }]);
    };
    sym(&mut f, 0, 0, 0);
    sym(&mut f, 1, 0x16, 0); // ietls_value: GLOBAL TLS, offset 0 of the TLS block
    sym(&mut f, 13, 0x11, SLOT); // ietls_slot: GLOBAL OBJECT
    f.extend(STRS);
    // DT_HASH: one bucket holding symbol 1, which chains to 2.
    u32s(&mut f, &[1, 3, 1, 0, 2, 0]);
    // The relocation: the slot gets ietls_value's offset from tp.
    u64s(&mut f, &[SLOT as u64, (1 << 32) | 18, 0]); // R_X86_64_TPOFF64
    u64s(&mut f, &[0]); // the slot
    u64s(&mut f, &[TLS_VALUE]);
    let dynamic: [(u64, usize); DYN_ENTRIES] = [
        (4, HASH),
        (5, DYNSTR),
        (6, DYNSYM),
        (10, STRS.len()),
        (11, 24),
        (7, RELA),
        (8, 24),
        (9, 24),
        (30, 0x10), // DT_FLAGS: DF_STATIC_TLS
        (0, 0),
    ];
    for (tag, value) in dynamic {
        u64s(&mut f, &[tag, value as u64]);
    }
    assert_eq!(f.len(), END);
    std::fs::write(path, f).unwrap();
}

fn dlopen(path: &std::path::Path, flags: libc::c_int) -> *mut c_void {
    let name = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; the library has no constructors.
    let handle = unsafe { libc::dlopen(name.as_ptr(), flags) };
    if handle.is_null() {
        // SAFETY: dlerror's message is valid until the next dl call here.
        let why = unsafe { std::ffi::CStr::from_ptr(libc::dlerror()) };
        panic!("dlopen {}: {why:?}", path.display());
    }
    handle
}

/// The library's TLS variable as initial-exec code reads it in the calling
/// thread: at tp plus the offset the loader put in the slot.
fn read_ie_tls(slot: usize) -> u64 {
    // SAFETY: the slot holds the variable's offset from tp, which the
    // loader gave every thread; pthread_self() is tp on x86_64 glibc.
    unsafe { *((libc::pthread_self() as usize).wrapping_add_signed(*(slot as *const isize)) as *const u64) }
}

fn temp_library(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rawthread-{name}-{}.so", std::process::id()));
    tls_library(&path);
    path
}

/// A library with initial-exec TLS dlopen'ed while raw threads run: each
/// of them reads its initial value, as do threads made after it.
#[test]
fn dlopen_initialises_initial_exec_tls_in_raw_threads() {
    const TEST: &str = "dlopen_initialises_initial_exec_tls_in_raw_threads";
    if !in_child_half(TEST) {
        return;
    }
    rawthread::spawn(|| ()).join().unwrap();
    let (inner, outer) = Worker::nested("raw-in-raw");
    let workers = vec![Worker::raw("raw"), Worker::detached("detached"), inner, outer, Worker::std("std")];
    let path = temp_library("ietls");
    let handle = dlopen(&path, libc::RTLD_NOW);
    std::fs::remove_file(&path).unwrap();
    // SAFETY: a live handle and a NUL-terminated name.
    let slot = unsafe { libc::dlsym(handle, c"ietls_slot".as_ptr()) } as usize;
    assert_ne!(slot, 0);
    assert_eq!(read_ie_tls(slot), TLS_VALUE, "the main thread");
    for w in &workers {
        let (tx, rx) = channel();
        w.run(move || tx.send(read_ie_tls(slot)).unwrap());
        assert_eq!(rx.recv().unwrap(), TLS_VALUE, "the {} thread, alive at the dlopen", w.kind);
    }
    assert_eq!(rawthread::spawn(move || read_ie_tls(slot)).join().unwrap(), TLS_VALUE, "a raw thread made after");
    for w in workers {
        w.stop();
    }
    println!("1 passed");
}

/// glibc's `THREAD_GSCOPE_FLAG_USED` and `_WAIT`, in `tcbhead_t`'s
/// `gscope_flag` at `%fs:0x1c`: what every symbol lookup sets for its
/// duration, and what `dlclose` swaps in to wait for it.
const GSCOPE_FLAG: usize = 0x1c;
const GSCOPE_USED: i32 = 1;
const GSCOPE_WAIT: i32 = 2;

/// `dlclose` of a library in the global scope waits for every raw thread
/// inside a symbol lookup: a raw thread marks itself as in one, as glibc's
/// lookup does, and sees `dlclose` ask to be woken when it is done; the
/// `dlclose` returns only after that. And while raw threads look symbols
/// up without end, a library can be opened and closed 200 times, and
/// every lookup finds its symbol.
#[test]
fn dlclose_waits_for_raw_threads_in_a_symbol_lookup() {
    const TEST: &str = "dlclose_waits_for_raw_threads_in_a_symbol_lookup";
    if !in_child_half(TEST) {
        return;
    }
    let path = temp_library("gscope");
    let handle = dlopen(&path, libc::RTLD_NOW | libc::RTLD_GLOBAL) as usize;
    let closed = Arc::new(AtomicBool::new(false));
    let (in_lookup, entered) = channel();
    let looker = {
        let closed = closed.clone();
        rawthread::spawn(move || {
            // SAFETY: our own tcbhead_t's gscope_flag, an aligned int.
            let flag = unsafe { AtomicI32::from_ptr((libc::pthread_self() as usize + GSCOPE_FLAG) as *mut i32) };
            flag.store(GSCOPE_USED, Ordering::SeqCst);
            in_lookup.send(()).unwrap();
            let asked = loop {
                if flag.load(Ordering::SeqCst) == GSCOPE_WAIT {
                    break true;
                }
                if closed.load(Ordering::SeqCst) {
                    break false;
                }
                std::thread::yield_now();
            };
            let closed_early = closed.load(Ordering::SeqCst);
            // Leave the lookup as glibc does: UNUSED, and wake the waiter.
            if flag.swap(0, Ordering::SeqCst) == GSCOPE_WAIT {
                // SAFETY: a private futex wake on our own flag.
                unsafe {
                    libc::syscall(libc::SYS_futex, flag.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1)
                };
            }
            (asked, closed_early)
        })
    };
    entered.recv().unwrap();
    let closer = {
        let closed = closed.clone();
        std::thread::spawn(move || {
            // SAFETY: the handle dlopen gave; nobody uses the library.
            assert_eq!(unsafe { libc::dlclose(handle as *mut c_void) }, 0);
            closed.store(true, Ordering::SeqCst);
        })
    };
    let (asked, closed_early) = looker.join().unwrap();
    closer.join().unwrap();
    assert!(asked, "dlclose did not wait for the raw thread in a symbol lookup");
    assert!(!closed_early, "dlclose returned while the raw thread was in a lookup");

    // Four raw threads look symbols up until told to stop. Each says when
    // its first lookup is done, and the cycles start only once all four
    // have: however late the scheduler runs them, they are looking up.
    let stop = Arc::new(AtomicBool::new(false));
    let (looking, first_lookups) = channel();
    let lookers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, mut looking) = (stop.clone(), Some(looking.clone()));
            rawthread::spawn(move || {
                let (mut lookups, mut found) = (0u64, 0u64);
                loop {
                    // SAFETY: lookups of names libc defines.
                    found += unsafe { !libc::dlsym(libc::RTLD_DEFAULT, c"strlen".as_ptr()).is_null() } as u64;
                    lookups += 1;
                    // Sent, then dropped: should a looker die before its
                    // first send, the wait below ends instead of hanging.
                    if let Some(looking) = looking.take() {
                        looking.send(()).unwrap();
                    }
                    if stop.load(Ordering::Relaxed) {
                        return (lookups, found);
                    }
                }
            })
        })
        .collect();
    drop(looking);
    for _ in 0..4 {
        first_lookups.recv().expect("a looker died before its first lookup");
    }
    for _ in 0..200 {
        let handle = dlopen(&path, libc::RTLD_NOW | libc::RTLD_GLOBAL);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::dlclose(handle) }, 0);
    }
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<(u64, u64)> = lookers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(counts.iter().all(|&(lookups, found)| found == lookups), "(lookups, found) per looker: {counts:?}");
    std::fs::remove_file(&path).unwrap();
    println!("1 passed");
}

/// gdb's `info threads` shows each named raw thread as a thread of the
/// program, `Thread 0x<pthread_self> (LWP <tid>) "<name>"`: libthread_db
/// found it on glibc's list (an unlisted one shows as a bare `LWP`).
#[test]
fn gdb_info_threads_lists_raw_threads_by_name() {
    const TEST: &str = "gdb_info_threads_lists_raw_threads_by_name";
    const NAMES: [&str; 3] = ["rt-alpha", "rt-beta", "rt-gamma"];
    if in_child(TEST) {
        // The debuggee: three named raw threads, each saying who it is,
        // then waiting until stdin closes.
        let (tx, rx) = channel();
        let (release, wait) = channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let threads: Vec<_> = NAMES
            .iter()
            .map(|name| {
                let (tx, wait) = (tx.clone(), wait.clone());
                rawthread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || {
                        // SAFETY: no preconditions.
                        let me = unsafe { libc::pthread_self() };
                        tx.send(format!("Thread {me:#x} (LWP {}) \"{name}\"", gettid())).unwrap();
                        // Until the sender is dropped.
                        let _ = wait.lock().unwrap().recv();
                    })
                    .unwrap()
            })
            .collect();
        for _ in NAMES {
            println!("{}", rx.recv().unwrap());
        }
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0]);
        drop(release);
        for t in threads {
            t.join().unwrap();
        }
        return;
    }
    if Command::new("gdb").arg("--version").stdout(Stdio::null()).status().is_err() {
        return println!("{TEST}: skipped: no gdb");
    }
    let mut debuggee = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, TEST)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(debuggee.stdout.take().unwrap()));
    let want: Vec<String> =
        lines.by_ref().map(|line| line.unwrap()).filter(|line| line.starts_with("Thread ")).take(NAMES.len()).collect();
    let gdb = Command::new("timeout")
        .args(["120", "gdb", "-nx", "-batch", "-p", &debuggee.id().to_string(), "-ex", "info threads"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    drop(debuggee.stdin.take());
    debuggee.wait().unwrap();
    let shown = String::from_utf8_lossy(&gdb.stdout);
    for line in &want {
        assert!(shown.contains(line.as_str()), "gdb's info threads lacks {line}:\n{shown}");
    }
    println!("{TEST}: gdb showed {}", want.join(", "));
}

/// A raw thread still running its `thread_local!` destructors (user code,
/// so still on glibc's list) is reached by a `seteuid` made meanwhile.
#[test]
fn setxid_reaches_a_thread_in_its_tls_destructor() {
    const TEST: &str = "setxid_reaches_a_thread_in_its_tls_destructor";
    if !in_root_child_half(TEST) {
        return;
    }
    use std::sync::atomic::AtomicU32;
    static STAGE: AtomicU32 = AtomicU32::new(0);
    static SEEN: AtomicU32 = AtomicU32::new(u32::MAX);
    struct OnExit;
    impl Drop for OnExit {
        fn drop(&mut self) {
            STAGE.store(1, Ordering::SeqCst);
            while STAGE.load(Ordering::SeqCst) != 2 {
                std::hint::spin_loop();
            }
            SEEN.store(euid(), Ordering::SeqCst);
        }
    }
    thread_local! { static ON_EXIT: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) }; }
    let h = rawthread::spawn(|| ON_EXIT.with(|s| *s.borrow_mut() = Some(OnExit)));
    while STAGE.load(Ordering::SeqCst) != 1 {
        std::thread::yield_now();
    }
    seteuid(NOBODY);
    STAGE.store(2, Ordering::SeqCst);
    h.join().unwrap();
    assert_eq!(SEEN.load(Ordering::SeqCst), NOBODY, "the thread in its TLS destructor kept its euid");
    seteuid(0);
    println!("1 passed");
}

/// Spawns whose clone fails (each lists and unlists its block), racing
/// 3000 `seteuid` flips: no deadlock.
#[test]
fn failed_clones_race_seteuid_flips() {
    const TEST: &str = "failed_clones_race_seteuid_flips";
    if !in_root_child_half(TEST) {
        return;
    }
    rawthread::spawn(|| ()).join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            refuse_syscalls(&[(libc::SYS_clone3, libc::EAGAIN), (libc::SYS_clone, libc::EAGAIN)]);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(rawthread::Builder::new().spawn(|| ()).is_err());
                n += 1;
            }
            n
        })
    };
    for flip in 0..3000 {
        seteuid(if flip % 2 == 0 { NOBODY } else { 0 });
    }
    stop.store(true, Ordering::Relaxed);
    let n = failer.join().unwrap();
    println!("{TEST}: 3000 flips against {n} failed spawns");
    println!("1 passed");
}
