//! The one-path switch: one ordinary program written only against
//! `thread::` paths (tests/one_path/program.rs) compiles and passes with
//! `use std::thread as thread;` and with `use rawthread as thread;`.

mod with_std {
    use std::thread;
    include!("one_path/program.rs");
}

mod with_rawthread {
    use rawthread as thread;
    include!("one_path/program.rs");
}

#[test]
fn the_program_on_std_thread() {
    with_std::run();
}

#[test]
fn the_program_on_rawthread() {
    with_rawthread::run();
}
