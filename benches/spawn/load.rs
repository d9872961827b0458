//! Part 4's load: CPU-bound competitor processes, and the child roles the
//! benchmark re-executes itself in.
//!
//! A child of the benchmark is this same executable, started with
//! [`ROLE`] set in its environment; `main` hands it to [`child_main`]
//! before doing anything else. Every child asks the kernel to kill it
//! when the benchmark dies (`PR_SET_PDEATHSIG`), so none outlives a
//! benchmark that panicked or was killed.

use std::io::{self, BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};

/// The environment variable that makes the executable a child.
pub(crate) const ROLE: &str = "RAWTHREAD_SPAWN_BENCH_ROLE";
/// The benchmark's pid, for the child to check that its parent is alive.
const PARENT: &str = "RAWTHREAD_SPAWN_BENCH_PARENT";

/// A command for this executable in `role`.
pub(crate) fn child_command(role: &str) -> io::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role).env(PARENT, std::process::id().to_string()).stdin(Stdio::null());
    Ok(command)
}

/// In a child, first thing: dies with the benchmark. Exits at once if the
/// benchmark is already gone (it died before the prctl took hold).
fn die_with_parent() {
    // SAFETY: prctl with an int argument; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let parent: Option<libc::pid_t> = std::env::var(PARENT).ok().and_then(|p| p.parse().ok());
    // SAFETY: getppid has no preconditions.
    if parent != Some(unsafe { libc::getppid() }) {
        std::process::exit(3);
    }
}

/// Runs the child `role` (the value of [`ROLE`]) and never returns.
pub(crate) fn child_main(role: &str) -> ! {
    die_with_parent();
    if role == "spin" {
        spin()
    }
    if let Some(args) = role.strip_prefix("live:") {
        crate::live::child(args)
    }
    if role == "first-spawn" {
        crate::first::child()
    }
    if let Some(id) = role.strip_prefix("burst:") {
        crate::burst::child(id)
    }
    eprintln!("spawn bench: unknown child role {role:?}");
    std::process::exit(2)
}

/// A competitor: says it is running, then burns CPU until killed.
fn spin() -> ! {
    let _ = writeln!(io::stdout(), "ready");
    let _ = io::stdout().flush();
    let mut x: u64 = 1;
    loop {
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

/// CPU-bound competitor processes, killed and reaped on drop.
pub(crate) struct Competitors {
    children: Vec<Child>,
}

impl Competitors {
    /// Starts `n` competitors and returns once every one is running.
    pub(crate) fn start(n: usize) -> io::Result<Competitors> {
        let mut competitors = Competitors { children: Vec::with_capacity(n) };
        for _ in 0..n {
            let mut child = child_command("spin")?.stdout(Stdio::piped()).spawn()?;
            let stdout = child.stdout.take();
            competitors.children.push(child);
            let mut line = String::new();
            if let Some(stdout) = stdout {
                BufReader::new(stdout).read_line(&mut line)?;
            }
            if line.trim() != "ready" {
                return Err(io::Error::other("a competitor did not start"));
            }
        }
        Ok(competitors)
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }
}

impl Drop for Competitors {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
