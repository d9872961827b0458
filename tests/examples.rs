//! The examples, run: each is compiled into this test as a module, so that
//! it runs wherever the tests run (valgrind, the glibc matrix's chroots),
//! and its own assertions (every sum right, every join ready) are checked.
//! (Hence their `pub fn main`: this file calls it.)

#[allow(dead_code)] // its `main`, which reads the command line
#[path = "../examples/sum_array.rs"]
mod sum_array;

#[path = "../examples/epoll_join.rs"]
mod epoll_join;

#[path = "../examples/hello.rs"]
mod hello;

#[path = "../examples/anatomy.rs"]
mod anatomy;

#[test]
fn sum_array_sums_right_with_threads_and_processes() {
    sum_array::run(1 << 16).unwrap();
}

#[test]
fn epoll_join_joins_every_worker_from_the_loop() {
    epoll_join::main().unwrap();
}

#[test]
fn hello_runs() {
    hello::main().unwrap();
}

#[test]
fn anatomy_runs() {
    anatomy::main();
}
