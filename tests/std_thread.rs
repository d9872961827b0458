//! Rust std's own thread tests, run under both paths: every test below is
//! instantiated twice, in `with_std` (`use std::thread as thread;`) and in
//! `with_rawthread` (`use rawthread as thread;`), and each runs in a child
//! process of its own (this binary again, with the test named; bounded by
//! `common::run_child`), so that a test that hangs, crashes or leaves
//! threads behind fails alone.
//!
//! # Where they come from
//!
//! Taken from the rust-lang/rust repository (std is MIT OR Apache-2.0, as
//! is this crate), as stored there near the 1.95 release (the tag itself
//! could not be had on this machine: no `rust-src`, and the repository is
//! too large to fetch):
//!
//! | file here | from |
//! |---|---|
//! | `std_thread/unit.rs` | `library/std/src/thread/tests.rs` |
//! | `std_thread/integration.rs` | `library/std/tests/thread.rs` |
//! | `std_thread/thread_local.rs` | `library/std/tests/thread_local/tests.rs` and `dynamic_tests.rs` |
//! | `std_thread/scoped_docs.rs` | the doc examples of `library/std/src/thread/scoped.rs` |
//!
//! Adapted only as far as running outside std needs: `crate::` paths are
//! `std::` or `thread::` ones; each `#[test]` is a `std_test!`; the one
//! `#[should_panic]` test catches the panic and asserts it; `#[cfg]`s that
//! hold on x86_64 Linux with glibc are dropped (`target_thread_local` is
//! unstable to name on stable); two timing assertions of `test_is_finished`
//! (a bound of 2 s) are left out, as this project's tests assert no timing
//! (the child's bound catches a hang).
//!
//! 49 tests on each path: 29 from `tests.rs`, 4 from `tests/thread.rs`, 9
//! and 3 from the `thread_local` tests, 4 scoped-thread doc examples.
//!
//! # Skipped, and why
//!
//! - `test_thread_os_id_not_equal` (`tests.rs`): `thread::current_os_id` is
//!   not public on stable 1.95 (nightly-only).
//! - `sleep_until` (`tests/thread.rs`): `thread::sleep_until` is unstable
//!   (`thread_sleep_until`, nightly-only).
//! - `scope_join_race` (`tests.rs`): `#[cfg(miri)]`, Miri-only.
//! - `test_minimal_thread_stack` (`tests.rs`) and `fiber_does_not_trigger_dtor`
//!   (`thread_local/tests.rs`): Windows-only.
//!
//! The one `compile_fail` example of `scoped.rs` (`Scope`'s: a scoped
//! thread may not lend its own stack to a thread it spawns) cannot run
//! here, as it must not compile: it is a doc test of rawthread's `Scope`
//! instead, under each path.

// std's test bodies are kept as std wrote them, in std's style, which these
// lints of this project's would rewrite.
#![allow(
    clippy::bool_assert_comparison,
    clippy::cmp_owned,
    clippy::len_zero,
    clippy::manual_repeat_n,
    clippy::match_single_binding,
    clippy::missing_const_for_thread_local,
    clippy::needless_return,
    clippy::ok_expect,
    clippy::redundant_closure,
    clippy::unused_unit
)]

mod common;

/// Runs `body` as the test `name` of `module`: in the child process that
/// `common::run_child` starts for it, or, in the parent, starts that child
/// and asserts that it passed.
fn run_in_child(module: &str, name: &str, body: fn()) {
    // libtest names a test by its path without the crate's name.
    let (_, module) = module.split_once("::").expect("a module of this crate");
    let test = format!("{module}::{name}");
    if common::in_child(&test) {
        body();
    } else {
        common::assert_child_passed(&common::run_child(&test, &[]));
    }
}

/// A test of std's, run in a child process (see [`run_in_child`]).
macro_rules! std_test {
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            fn body() $body
            crate::run_in_child(module_path!(), stringify!($name), body);
        }
    };
}

/// The whole suite, with `thread` meaning `$thread`.
macro_rules! suite {
    ($suite:ident, $($thread:tt)+) => {
        mod $suite {
            mod unit {
                use $($thread)+ as thread;
                include!("std_thread/unit.rs");
            }
            mod integration {
                use $($thread)+ as thread;
                include!("std_thread/integration.rs");
            }
            mod thread_local {
                use $($thread)+ as thread;
                include!("std_thread/thread_local.rs");
            }
            mod scoped_docs {
                use $($thread)+ as thread;
                include!("std_thread/scoped_docs.rs");
            }
        }
    };
}

suite!(with_std, std::thread);
suite!(with_rawthread, rawthread);
