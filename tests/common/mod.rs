//! Shared by the integration tests: running one test in a child process,
//! for what may crash, change process-wide state or measure the process.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

const CHILD_ENV: &str = "RAWTHREAD_TEST_CHILD";

/// True in the child process started by [`run_child`] for test `name`.
pub fn in_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Re-runs this test binary with only test `name`, marked as the child.
pub fn run_child(name: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("re-running the test binary")
}

/// [`run_child`], asserting the child passed; returns its stdout.
pub fn run_child_ok(name: &str) -> String {
    let out = run_child(name);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Resident set size in bytes.
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
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

/// Installs a seccomp filter that fails `clone3` with `clone3_errno` and,
/// if `clone_errno` is non-zero, `clone` with it; everything else passes.
pub fn refuse_clone(clone3_errno: u32, clone_errno: u32) {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt, jf, k };
    let clone_action = if clone_errno == 0 { libc::SECCOMP_RET_ALLOW } else { libc::SECCOMP_RET_ERRNO | clone_errno };
    let mut program = [
        // The syscall number: seccomp_data.nr, at offset 0.
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jump(libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | clone3_errno),
        jump(libc::SYS_clone as u32, 0, 1),
        stmt(BPF_RET | BPF_K, clone_action),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: a well-formed filter that outlives the call (the kernel
    // copies it); no_new_privs is what an unprivileged filter needs.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog), 0);
    }
}
