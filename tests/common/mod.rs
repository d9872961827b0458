//! Shared by the integration tests: running one test in a child process
//! (for what may crash, changes process-wide state or measures the whole
//! process), quiet deliberate panics, and small readings of /proc.

#![allow(dead_code)] // each test binary uses its own subset

use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::{Once, mpsc};
use std::time::Duration;

/// Tells a re-run of the test binary which test's child half to play.
pub const CHILD_ENV: &str = "RAWTHREAD_CHILD";

/// Whether this process is the child run of `test` (see [`run_child`]).
pub fn in_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// How long a child may run before it is taken for hung and killed (not
/// a timing assertion: a bound that turns a hang into a failure).
const CHILD_BOUND: Duration = Duration::from_secs(600);

/// Runs this test binary again with only `test` selected, with
/// `RAWTHREAD_CHILD=test` and `env` (which may override it), and returns
/// what it printed. A child still running after [`CHILD_BOUND`] is killed
/// (SIGKILL), so that a deadlock fails its test instead of hanging the suite.
pub fn run_child(test: &str, env: &[(&str, &str)]) -> Output {
    let child = Command::new(std::env::current_exe().expect("current_exe"))
        .env(CHILD_ENV, test)
        .envs(env.iter().copied())
        .args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary as a child process");
    let pid = child.id() as libc::pid_t;
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(CHILD_BOUND) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: our own child, which cannot have been reaped: the
            // waiting thread says so (drops `done`) right after reaping, and
            // a child still running at the bound has not exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait for the child process");
    drop(done);
    watchdog.join().unwrap();
    out
}

/// Asserts that the child ran its test and passed, showing its output if not.
pub fn assert_child_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run the test:\n{stdout}");
}

/// [`run_child`] without extra environment, asserting that the child
/// passed; returns its stdout.
pub fn run_child_ok(test: &str) -> String {
    let out = run_child(test, &[]);
    assert_child_passed(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every deliberate panic's message starts with this, so that the panic
/// hook can keep them off stderr.
pub const EXPECTED: &str = "expected panic";

/// Keeps deliberate panics quiet (raw threads do not inherit libtest's
/// output capture, so their panic messages would go straight to stderr):
/// messages starting with [`EXPECTED`] and non-string payloads. Every other
/// panic is reported by the default hook as usual.
pub fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload.downcast_ref::<&str>().copied().or(payload.downcast_ref::<String>().map(|s| &**s));
            if message.is_some_and(|s| !s.starts_with(EXPECTED)) {
                default(info);
            }
        }));
    });
}

pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Resident set size in bytes.
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size()
}

/// Bytes malloc has handed out and not had back (all arenas).
pub fn malloc_in_use() -> usize {
    // SAFETY: mallinfo2 has no preconditions.
    unsafe { libc::mallinfo2() }.uordblks
}

/// This process's address space (VmSize), in bytes.
pub fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmSize:")).expect("VmSize in /proc/self/status");
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() << 10
}

/// Number of mappings.
pub fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

/// Number of open file descriptors.
pub fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Number of tasks (threads) in this process.
pub fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Number of tasks in this process that have not begun to exit. A join
/// returns once the kernel clears the thread's tid word, which it does in
/// the thread's exit, before it takes the task off /proc/self/task: a
/// thread just joined may still be listed there for a while, with
/// `PF_EXITING` in its flags (field 9 of its `stat`), running no more
/// user code. Counted without it, the number is exact at once.
pub fn live_tasks() -> usize {
    const PF_EXITING: u64 = 0x4;
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|entry| {
            let stat = entry.as_ref().unwrap().path().join("stat");
            // Unreadable: reaped since the listing.
            let Ok(stat) = std::fs::read_to_string(stat) else { return false };
            // After the name (which may hold spaces and parentheses): the
            // state, ppid, pgrp, session, tty_nr, tpgid, then the flags.
            let flags: u64 = stat.rsplit_once(") ").unwrap().1.split(' ').nth(6).unwrap().parse().unwrap();
            flags & PF_EXITING == 0
        })
        .count()
}

/// Unmaps every pooled region. Which regions the pool keeps, and so how
/// their mappings merge with their neighbours, varies from run to run;
/// emptied, the mappings left are exactly what leaked.
pub fn drain_pool() {
    let limits = rawthread::set_pool_limits(rawthread::PoolLimits { regions: 0, bytes: 0 });
    rawthread::set_pool_limits(limits);
}

fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

/// If A == k, go on with the next instruction; else skip `skip` of them.
fn bpf_unless_equal(k: u32, skip: u8) -> libc::sock_filter {
    libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: skip, k }
}

/// Makes each listed syscall fail with its errno in the calling thread and
/// every thread it creates from now on (a seccomp filter: for child
/// processes only).
pub fn refuse_syscalls(refusals: &[(libc::c_long, i32)]) {
    // A = the syscall number.
    let mut filter = vec![bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0)];
    for &(nr, errno) in refusals {
        // If A == nr, fall through to the refusal; else skip over it.
        filter.push(bpf_unless_equal(nr as u32, 1));
        filter.push(bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno as u32));
    }
    filter.push(bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    install_filter(filter);
    // The filter answers as intended (clone3 only: a real clone with these
    // arguments would fork).
    for &(nr, errno) in refusals.iter().filter(|r| r.0 == libc::SYS_clone3) {
        // SAFETY: clone3 with a null argument block creates nothing.
        assert_eq!(unsafe { libc::syscall(nr, std::ptr::null_mut::<libc::c_void>(), 0) }, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(errno));
    }
}

/// `madvise` advice 102: guard markers (Linux 6.13).
pub const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Tells a child run (in its environment) to refuse guard markers, so that
/// rawthread falls back to `PROT_NONE` guards: see [`enter_guard_path`].
pub const NO_GUARD_MARKERS: (&str, &str) = ("RAWTHREAD_TEST_NO_GUARD_MARKERS", "1");

/// In a child run: if its environment says so ([`NO_GUARD_MARKERS`]),
/// makes `madvise(_, _, MADV_GUARD_INSTALL)` fail with `EINVAL`, as a
/// kernel before 6.13 answers, for the rest of this process (a seccomp
/// filter; every other `madvise` still works).
pub fn enter_guard_path() {
    if std::env::var(NO_GUARD_MARKERS.0).is_err() {
        return;
    }
    // seccomp_data: nr at 0, args[i] at 16 + 8 i (low half first).
    let load = |offset| bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let ret = |k| bpf_stmt(libc::BPF_RET | libc::BPF_K, k);
    install_filter(vec![
        load(0),
        bpf_unless_equal(libc::SYS_madvise as u32, 3),
        load(16 + 2 * 8),
        bpf_unless_equal(MADV_GUARD_INSTALL as u32, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        ret(libc::SECCOMP_RET_ALLOW),
    ]);
    assert!(!markers_installable(), "the filter let a guard marker through");
}

/// Whether `madvise` installs guard markers here (kernel, filter).
pub fn markers_installable() -> bool {
    let page = page_size();
    // SAFETY: a fresh private mapping of our own, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let ok = libc::madvise(p, page, MADV_GUARD_INSTALL) == 0;
        libc::munmap(p, page);
        ok
    }
}

/// How the page at `addr` is kept from being touched, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// A guard marker: `/proc/self/pagemap`'s bit 58 (`PM_GUARD_REGION`,
    /// Linux 6.15); the mapping itself is readable and writable.
    Marker,
    /// A `PROT_NONE` mapping (`---p` in `/proc/self/maps`).
    ProtNone,
    /// Nothing: the page can be used.
    Open,
}

/// The guard at `addr`, from `/proc/self/pagemap` and `/proc/self/maps`.
pub fn guard_at(addr: usize) -> Guard {
    use std::os::unix::fs::FileExt;
    const PM_GUARD_REGION: u64 = 1 << 58;
    let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut entry = [0u8; 8];
    pagemap.read_exact_at(&mut entry, (addr / page_size() * 8) as u64).unwrap();
    if u64::from_ne_bytes(entry) & PM_GUARD_REGION != 0 {
        return Guard::Marker;
    }
    match protection_at(addr).as_str() {
        "---p" => Guard::ProtNone,
        _ => Guard::Open,
    }
}

/// The protection `/proc/self/maps` shows at `addr` (`rw-p`, ...), or
/// `unmapped`.
pub fn protection_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|line| {
            let (range, rest) = line.split_once(' ').unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let (start, end) = (usize::from_str_radix(start, 16).unwrap(), usize::from_str_radix(end, 16).unwrap());
            (start..end).contains(&addr).then(|| rest[..4].to_string())
        })
        .unwrap_or_else(|| "unmapped".into())
}

/// Installs a seccomp filter on this thread and those it creates (a child
/// process's, as it cannot be taken off).
fn install_filter(mut filter: Vec<libc::sock_filter>) {
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: `prog` points at a valid filter that outlives the call (the
    // kernel copies it); no_new_privs only limits this child process.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let ret = libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog);
        assert_eq!(ret, 0, "seccomp: {}", io::Error::last_os_error());
    }
}

/// The address of glibc's `_rtld_global._dl_stack_user`, from the
/// descriptors glibc exports for libthread_db.
fn glibc_user_list() -> usize {
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: a NUL-terminated name.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?} not found");
        p as usize
    };
    // SAFETY: a `u32[3]` libthread_db descriptor {bits, count, offset}.
    sym(c"_rtld_global") + unsafe { *(sym(c"_thread_db_rtld_global__dl_stack_user") as *const [u32; 3]) }[2] as usize
}

/// glibc's `_dl_stack_cache_lock`, which guards its thread lists: 48 bytes
/// after `_dl_stack_user` in `struct rtld_global` (as rawthread's probe
/// proves on every glibc it runs on).
pub fn glibc_thread_list_lock() -> &'static std::sync::atomic::AtomicI32 {
    // SAFETY: an aligned int in ld.so's data, alive for the process.
    unsafe { std::sync::atomic::AtomicI32::from_ptr((glibc_user_list() + 48) as *mut i32) }
}

/// How many threads glibc's `_dl_stack_user` list holds (the list of
/// threads whose stacks glibc did not allocate: the main thread, raw
/// threads, pthreads on stacks of their own), read through the descriptors
/// glibc exports for libthread_db; `None` if it is not a sound ring. A
/// test's oracle: read without glibc's lock, so only while no thread is
/// being made or is exiting.
pub fn glibc_user_threads() -> Option<usize> {
    let head = glibc_user_list();
    let link = |node: usize, i: usize| {
        // SAFETY: a list head or a node reached from it, mapped while listed.
        unsafe { *((node + 8 * i) as *const usize) }
    };
    let (mut node, mut n) = (head, 0);
    loop {
        let next = link(node, 0);
        if next == 0 || link(next, 1) != node || n > 1 << 20 {
            return None;
        }
        if next == head {
            return Some(n);
        }
        n += 1;
        node = next;
    }
}

/// A thread's start routine, as `pthread_create` takes it.
pub type StartRoutine = extern "C" fn(*mut std::ffi::c_void) -> *mut std::ffi::c_void;
/// `pthread_create`'s type.
pub type PthreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartRoutine,
    *mut std::ffi::c_void,
) -> libc::c_int;

/// glibc's own `pthread_create`, for a test binary that defines its own
/// (which the linker binds every call in the executable to) and forwards.
pub fn glibc_pthread_create() -> PthreadCreate {
    // SAFETY: RTLD_NEXT finds glibc's pthread_create, whose type this is.
    unsafe {
        let p = libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr());
        assert!(!p.is_null(), "glibc's pthread_create not found");
        std::mem::transmute::<*mut std::ffi::c_void, PthreadCreate>(p)
    }
}
