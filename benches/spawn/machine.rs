//! The machine

use std::ffi::{CStr, c_char};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::PAGE;

pub(crate) fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("statm resident");
    pages * PAGE
}

/// `AnonHugePages` of this process, KiB: how much THP actually backs.
pub(crate) fn anon_huge_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    field_kib(&text, "AnonHugePages:").unwrap_or(0.0) as u64
}

/// System-wide `KernelStack`, `PageTables` and `SUnreclaim`, KiB.
pub(crate) fn meminfo_kib() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    ["KernelStack:", "PageTables:", "SUnreclaim:"].map(|key| field_kib(&text, key).unwrap_or(0.0))
}

pub(crate) fn field_kib(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// The bracketed word of the THP `enabled` file, e.g. `madvise`.
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

pub(crate) struct Machine {
    pub(crate) cpus_online: i64,
    pub(crate) cpus_usable: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) glibc: String,
    pub(crate) thp: Option<String>,
    pub(crate) load: String,
}

pub(crate) fn machine() -> Machine {
    // SAFETY: a zeroed utsname is valid, and uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid utsname to fill.
    unsafe { libc::uname(&mut uts) };
    // SAFETY: uname NUL-terminates its fields.
    let field = |f: &[c_char]| unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned();
    // SAFETY: glibc returns a pointer to a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        // SAFETY: sysconf has no preconditions.
        cpus_online: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        cpus_usable: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into()),
        kernel: format!("{} {} {}", field(&uts.sysname), field(&uts.release), field(&uts.machine)),
        glibc,
        thp: thp_mode(),
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}

/// Pins the calling thread — at startup the only one, so from then on the
/// process: threads and children inherit the mask.
pub(crate) fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size we pass, for this thread (0).
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Now, as `YYYY-MM-DD hh:mm:ss UTC`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    // Days to civil date: Howard Hinnant's algorithm (proleptic Gregorian).
    let z = secs.div_euclid(86_400) + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// `target/`: `CARGO_TARGET_DIR` if set; else the directory above this
/// executable that cargo marked with `CACHEDIR.TAG` (right for a target
/// dir set in a cargo config, too); else `target/` next to Cargo.toml.
pub(crate) fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
