//! The spawn benchmark: coming soon (see README).

fn main() {
    println!("rawthread spawn benchmark: coming soon (the benchmark issue is next; see README)");
}
