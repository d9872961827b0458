//! Part 7: the most threads alive at once, before the first error.
//!
//! Each variant runs in a child process (this executable again, see
//! `load.rs`): it spawns threads with 64 KiB stacks that park forever,
//! one at a time, each waited for until it runs, and writes the count
//! after every one, until the cap or the first error. Then it leaves with
//! `_exit`, which ends every thread at once; a variant that aborts the
//! process takes only the child with it, and the last count it wrote and
//! the tail of its stderr say how far it got and why. An `alarm` bounds
//! the child's time.
//!
//! On its way up, with 0, 1,000 and 10,000 threads alive ([`CHECKPOINTS`]),
//! the child also counts its mappings and times `fork` + `waitpid` (of a
//! child that `_exit`s at once), which copies every mapping and its page
//! tables: the cost of guard mappings, which split each thread's stack.

use std::ffi::CStr;
use std::io::{self, Write as _};
use std::process::Stdio;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::load::child_command;

const STACK: usize = 64 << 10;
/// Seconds before the kernel ends a child that got stuck.
const CHILD_ALARM_S: u32 = 90;
/// Threads alive at which mappings are counted and fork+waitpid timed.
pub(crate) const CHECKPOINTS: [usize; 3] = [0, 1_000, 10_000];
/// fork+waitpid samples per checkpoint; their median is kept.
pub(crate) const FORKS: usize = 7;

/// What the child saw with `threads` threads alive.
pub(crate) struct Checkpoint {
    pub(crate) threads: usize,
    /// Mappings in /proc/self/maps.
    pub(crate) maps: usize,
    /// Median fork + waitpid, µs.
    pub(crate) fork_us: f64,
}

/// The variants: (id, label).
pub(crate) const LIVE_VARIANTS: [(&str, &str); 3] = [
    ("rawthread", "rawthread, 64 KiB stacks"),
    ("std_thread", "std::thread, 64 KiB stacks"),
    ("pthread", "pthread_create, 64 KiB stacks"),
];

pub(crate) struct Live {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) cap: usize,
    /// Threads alive at once when it stopped.
    pub(crate) alive: usize,
    /// Why it stopped: the cap, the spawn's error, or how the process died.
    pub(crate) stopped_by: String,
    pub(crate) seconds: f64,
    /// The checkpoints it reached.
    pub(crate) checkpoints: Vec<Checkpoint>,
}

impl Live {
    /// Mappings per live thread at `c`, counted from the first checkpoint
    /// (0 threads).
    pub(crate) fn maps_per_thread(&self, c: &Checkpoint) -> f64 {
        let base = self.checkpoints.first().map_or(0, |b| b.maps);
        (c.maps as f64 - base as f64) / c.threads.max(1) as f64
    }
}

/// Runs every variant's child, one after the other.
pub(crate) fn measure_live(cap: usize, progress: &crate::progress::Progress) -> Vec<Live> {
    LIVE_VARIANTS
        .iter()
        .map(|&(id, label)| {
            progress.show(format_args!("threads alive at once: {label} (up to {cap})"));
            let start = Instant::now();
            let (alive, stopped_by, checkpoints) =
                run_child(id, cap).unwrap_or_else(|e| (0, format!("could not run: {e}"), Vec::new()));
            // Let the kernel finish tearing down the child's threads
            // before the next variant counts against the same limits.
            std::thread::sleep(Duration::from_millis(200));
            Live { id, label, cap, alive, stopped_by, seconds: start.elapsed().as_secs_f64(), checkpoints }
        })
        .collect()
}

fn run_child(id: &str, cap: usize) -> io::Result<(usize, String, Vec<Checkpoint>)> {
    let out = child_command(&format!("live:{id}:{cap}"))?.stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alive = stdout.lines().rev().find_map(|l| l.strip_prefix("alive ")?.parse().ok()).unwrap_or(0);
    let error = stdout.lines().find_map(|l| l.strip_prefix("error ")).map(str::to_string);
    // "at <threads> maps <n> fork_us <µs>"
    let checkpoints = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.strip_prefix("at ")?.split(' ').collect();
            match f[..] {
                [threads, "maps", maps, "fork_us", us] => Some(Checkpoint {
                    threads: threads.parse().ok()?,
                    maps: maps.parse().ok()?,
                    fork_us: us.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    use std::os::unix::process::ExitStatusExt as _;
    let stopped_by = match (error, out.status.signal()) {
        (_, Some(signal)) => {
            // SAFETY: strsignal returns a pointer to a static or
            // thread-local NUL-terminated string, read at once.
            let name = unsafe { CStr::from_ptr(libc::strsignal(signal)) }.to_string_lossy().into_owned();
            format!("process aborted: signal {signal} ({name}); stderr: {tail:?}")
        }
        (Some(error), None) => format!("{error}; {}", which_limit(&stdout)),
        (None, None) if stdout.lines().any(|l| l == "done") => format!("reached the cap ({cap})"),
        (None, None) => format!("child ended without a verdict: {}; stderr: {tail:?}", out.status),
    };
    Ok((alive, stopped_by, checkpoints))
}

/// Names the limit the child was at when its spawn failed, from the
/// mappings and tasks it counted then.
fn which_limit(stdout: &str) -> String {
    let field = |key: &str| stdout.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok());
    let sysctl = |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let (maps, tasks) = (field("maps "), field("tasks "));
    let (max_maps, pid_max, threads_max) = (
        sysctl("/proc/sys/vm/max_map_count"),
        sysctl("/proc/sys/kernel/pid_max"),
        sysctl("/proc/sys/kernel/threads-max"),
    );
    let near =
        |have: Option<u64>, max: Option<u64>, slack: u64| matches!((have, max), (Some(h), Some(m)) if h + slack >= m);
    let seen = format!(
        "{} mappings in the child, {} tasks on the system",
        maps.map_or("?".into(), |m| m.to_string()),
        tasks.map_or("?".into(), |t| t.to_string())
    );
    if near(maps, max_maps, 8) {
        format!("limit: vm.max_map_count ({}; {seen})", max_maps.unwrap_or(0))
    } else if near(tasks, pid_max, 256) {
        format!("limit: kernel.pid_max ({}; {seen})", pid_max.unwrap_or(0))
    } else if near(tasks, threads_max, 256) {
        format!("limit: kernel.threads-max ({}; {seen})", threads_max.unwrap_or(0))
    } else {
        format!("limit not identified ({seen})")
    }
}

// ---------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------

/// Threads that have started.
static STARTED: AtomicUsize = AtomicUsize::new(0);
/// The word every thread sleeps on; nobody ever changes it.
static PARK: AtomicI32 = AtomicI32::new(0);

fn park_forever() {
    STARTED.fetch_add(1, Ordering::Release);
    loop {
        // SAFETY: a valid, aligned i32 for the call; a null timeout sleeps
        // until a wake that never comes (or a signal: sleep again).
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                PARK.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                ptr::null::<libc::timespec>(),
            )
        };
    }
}

extern "C" fn pthread_park(_: *mut libc::c_void) -> *mut libc::c_void {
    park_forever();
    ptr::null_mut()
}

fn spawn_one(id: &str) -> Result<(), String> {
    match id {
        "rawthread" => match rawthread::Builder::new().stack_size(STACK).spawn(park_forever) {
            // Detached: it parks forever all the same.
            Ok(handle) => drop(handle),
            Err(e) => return Err(e.to_string()),
        },
        "std_thread" => match std::thread::Builder::new().stack_size(STACK).spawn(park_forever) {
            Ok(handle) => drop(handle),
            Err(e) => return Err(e.to_string()),
        },
        "pthread" => {
            // SAFETY: a zeroed attr is initialised by pthread_attr_init
            // before use, and destroyed after.
            let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
            let mut thread: libc::pthread_t = 0;
            // SAFETY: a valid attr, initialised, then a valid thread and
            // start routine; the attr is destroyed once the create is done.
            let rc = unsafe {
                libc::pthread_attr_init(&mut attr);
                libc::pthread_attr_setstacksize(&mut attr, STACK);
                let rc = libc::pthread_create(&mut thread, &attr, pthread_park, ptr::null_mut());
                libc::pthread_attr_destroy(&mut attr);
                rc
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc).to_string());
            }
            // SAFETY: a joinable thread we made and never join.
            unsafe { libc::pthread_detach(thread) };
        }
        other => return Err(format!("unknown variant {other:?}")),
    }
    Ok(())
}

/// Counts this process's mappings and times `fork` + `waitpid` (median
/// of [`FORKS`]), as a line for the parent.
fn checkpoint(out: &mut impl io::Write, threads: usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    let mut us: Vec<f64> = (0..FORKS)
        .map(|_| {
            let start = Instant::now();
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(0) };
            }
            assert!(pid > 0, "fork: {}", io::Error::last_os_error());
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let _ = writeln!(out, "at {threads} maps {maps} fork_us {:.1}", us[FORKS / 2]);
}

/// `args`: `<variant>:<cap>`. Never returns.
pub(crate) fn child(args: &str) -> ! {
    // SAFETY: alarm has no preconditions; its SIGALRM ends this process.
    unsafe { libc::alarm(CHILD_ALARM_S) };
    let (id, cap) = args.split_once(':').unwrap_or((args, "0"));
    let cap: usize = cap.parse().unwrap_or(0);
    let mut out = io::stdout().lock();
    checkpoint(&mut out, 0);
    for n in 1..=cap {
        if let Err(e) = spawn_one(id) {
            let _ = writeln!(out, "error {e}");
            // What the limits are measured against, right at the failure.
            let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
            // The 4th field of /proc/loadavg: running/total tasks.
            let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let tasks = loadavg.split_whitespace().nth(3).and_then(|f| f.split_once('/')).map_or("?", |(_, t)| t);
            let _ = writeln!(out, "maps {maps}\ntasks {tasks}");
            break;
        }
        // Alive, not merely spawned: the thread has run.
        while STARTED.load(Ordering::Acquire) < n {
            std::thread::yield_now();
        }
        let _ = writeln!(out, "alive {n}");
        if CHECKPOINTS.contains(&n) {
            checkpoint(&mut out, n);
        }
    }
    let _ = writeln!(out, "done");
    let _ = out.flush();
    // SAFETY: ends the process and every thread in it, at once, with no
    // atexit handlers and no destructors.
    unsafe { libc::_exit(0) }
}
