//! The first spawn's one-time cost: the probe (rawthread's one pthread,
//! which finds glibc's private layout) and the twin census (that pthread
//! and two raw threads held against each other), paid once per process.
//!
//! Each sample is a fresh child process (this executable, role
//! `first-spawn`) that times its first spawn+join and then a second one;
//! the one-time cost is the difference of their medians.

use std::io;

use crate::load::child_command;

/// In the child: prints the first and the second spawn+join, in ns.
pub(crate) fn child() -> ! {
    let time = || {
        let t0 = rawthread::bench::now_ns();
        rawthread::spawn(|| ()).join().expect("a spawn");
        rawthread::bench::now_ns() - t0
    };
    let first = time();
    let second = time();
    println!("{first} {second}");
    std::process::exit(0)
}

/// The first and a later spawn+join, each the median over `processes`
/// fresh processes, in ns.
pub(crate) fn measure(processes: usize) -> io::Result<(f64, f64)> {
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for _ in 0..processes {
        let out = child_command("first-spawn")?.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut numbers = text.split_whitespace().filter_map(|n| n.parse::<f64>().ok());
        match (out.status.success(), numbers.next(), numbers.next()) {
            (true, Some(f), Some(l)) => {
                first.push(f);
                later.push(l);
            }
            _ => return Err(io::Error::other(format!("a first-spawn child failed: {:?}", out.status))),
        }
    }
    Ok((median(&mut first), median(&mut later)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
