//! A raw thread's name where std reads it: in its `std::thread::Thread`,
//! so that `thread::current().name()`, `JoinHandle::thread().name()` and
//! panic messages (`thread '<name>' panicked`) give it, as for a thread
//! std made, in the closure and in TLS destructors alike.
//!
//! std makes a thread's `Thread` in that thread, on its first
//! `thread::current()`, unnamed, and offers no way to name it. Its private
//! shape is an `Arc`'d inner that holds the name as an `Option<CString>`: a
//! pointer to the bytes with their NUL, and their length, each a word
//! whose place in the inner is the compiler's choice. So rawthread does
//! not assume the places: the first named spawn of a process *proves*
//! them on the running binary, with std's own reader ([`prove`]): on a copy
//! of an unnamed `Thread`'s allocation, in rawthread's memory, it writes a
//! name at each pair of places it could be, and asks `Thread::name()` of a
//! handle to the copy which pair it reads, for two names of different
//! lengths. Only the one pair so proven is ever written in a real thread's
//! inner; where no single pair is proven (a std whose `Thread` is shaped
//! otherwise), raw threads stay unnamed to std, as before, and keep their
//! kernel name: the failure is "unnamed", never a wrong write.
//!
//! The name is a `CString` made as std makes a thread's (`CString::new`,
//! from the global allocator) and handed over whole: std's drop of the
//! inner frees it as it frees a name of its own.
//!
//! A change of Rust toolchain changes nothing here as long as `Thread` is
//! one pointer to an `Arc`'s allocation whose inner keeps the name as a
//! `CString` in its first four words, as it does from 1.88 (the declared
//! `rust-version`) to 1.95 and the nightly after it, all three tested; a
//! std shaped otherwise fails the proof, and its raw threads are unnamed
//! to std. The proof runs once per process; an unnamed spawn costs nothing
//! more, a named one a `CString` (as std's does) and two stores.
//!
//! Why not have std's own `Builder` make the `Thread` and the handle, with
//! rawthread beneath it as the `pthread_create` std calls: std's semantics
//! would come by construction, but only by defining `pthread_create` for
//! the whole executable (std calls it by name), which sanitizers and
//! programs that define it themselves also do; std would `pthread_join` or
//! `pthread_detach` the thread, which a raw thread must never be given to;
//! and rawthread's own options (guard size, signal mask, affinity,
//! scheduling, pidfd, `layout()`) have no way through std's `Builder`.

use std::ffi::CString;
use std::mem::{self, ManuallyDrop};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;

use crate::lazy::LazyUsize;

/// A thread's name, as the kernel and std each take it.
pub(crate) struct ThreadName {
    /// For the kernel: at most 15 bytes and a NUL, all NUL when unnamed.
    pub kernel: [u8; 16],
    /// For std's `Thread`, whole.
    pub std: Option<CString>,
}

impl ThreadName {
    /// # Panics
    /// If `name` has a NUL byte, with std's message (std's
    /// `Builder::spawn` panics there too, before it makes anything).
    pub(crate) fn new(name: Option<&str>) -> ThreadName {
        let mut kernel = [0u8; 16];
        let std = name.map(|name| {
            let n = name.len().min(15);
            kernel[..n].copy_from_slice(&name.as_bytes()[..n]);
            CString::new(name).expect("thread name may not contain interior null bytes")
        });
        ThreadName { kernel, std }
    }
}

/// Words of a `Thread`'s allocation that the proof copies: the `Arc`'s two
/// counts, then the inner's first four words. std's inner has at least a
/// name (two words), a `ThreadId` and a parker, so all are its own.
const WORDS: usize = 6;
/// The first word of the inner: after the `Arc`'s strong and weak counts.
const INNER: usize = 2;

/// Where a `Thread`'s allocation keeps the name: the word indices of the
/// `CString`'s pointer and length.
#[derive(Clone, Copy)]
struct Slots {
    ptr: usize,
    len: usize,
}

impl Slots {
    /// For [`LazyUsize`]: never 0.
    fn encode(slots: Option<Slots>) -> usize {
        match slots {
            Some(Slots { ptr, len }) => 1 + ptr + (len << 8),
            None => NOT_PROVEN,
        }
    }

    fn decode(word: usize) -> Option<Slots> {
        (word != NOT_PROVEN).then(|| Slots { ptr: (word & 0xff) - 1, len: word >> 8 })
    }
}

/// The proof failed: std's `Thread` is not shaped as [`prove`] expects.
const NOT_PROVEN: usize = usize::MAX;

/// Gives `thread`, the calling thread's own `Thread` (which nobody else
/// holds yet), the name `name`, if this std's shape is proven; otherwise
/// drops `name`, and the thread stays unnamed to std.
pub(crate) fn give(thread: &Thread, name: CString) {
    static PROOF: LazyUsize = LazyUsize::new();
    let Some(slots) = Slots::decode(PROOF.get(|| Slots::encode(prove(thread)))) else { return };
    if thread.name().is_some() {
        return;
    }
    let len = name.as_bytes_with_nul().len();
    // The allocation goes to std's inner, whose drop frees it as
    // `CString::from_raw` would: a box of `len` bytes.
    let ptr = name.into_raw() as usize;
    let base = allocation(thread) as *mut usize;
    // SAFETY: the proof found these words of a `Thread`'s allocation to be
    // its name's, and `thread`'s holds no name (just checked): nothing is
    // overwritten but a `None`, and no `&str` of the name is alive.
    // Nobody else reads the inner yet: `thread` is the calling thread's,
    // published by it only after this.
    unsafe {
        base.add(slots.ptr).write(ptr);
        base.add(slots.len).write(len);
    }
    debug_assert_eq!(thread.name().map(|s| s.as_ptr() as usize), Some(ptr));
}

/// The address a `Thread` points at: its `Arc`'s allocation.
fn allocation(thread: &Thread) -> usize {
    // SAFETY: called only once `size_of::<Thread>()` is one word (checked
    // by `prove`); its bits are the `Arc`'s pointer.
    unsafe { mem::transmute_copy::<Thread, usize>(thread) }
}

/// Finds where `thread`'s allocation keeps the name, by experiment with
/// std's own `Thread::name()`, or `None`. `thread` is the calling thread's
/// own, unnamed, and held by nobody else; nothing of it is written.
fn prove(thread: &Thread) -> Option<Slots> {
    if mem::size_of::<Thread>() != mem::size_of::<usize>() || thread.name().is_some() {
        return None;
    }
    let base = allocation(thread);
    if base == 0 || !base.is_multiple_of(mem::align_of::<usize>()) {
        return None;
    }
    // That the word there is the strong count of an `Arc`: a clone adds one.
    // SAFETY: `thread` points at its live allocation, at least WORDS words.
    let strong = unsafe { AtomicUsize::from_ptr(base as *mut usize) };
    let before = strong.load(Ordering::Relaxed);
    let clone = thread.clone();
    let counted = strong.load(Ordering::Relaxed) == before + 1;
    drop(clone);
    if !counted || strong.load(Ordering::Relaxed) != before {
        return None;
    }
    // SAFETY: as above; a plain copy of the words, which nobody writes
    // meanwhile (the counts only by this thread, done).
    let copy: [usize; WORDS] = unsafe { ptr::read(base as *const [usize; WORDS]) };

    // Every place the pointer and the length could each be in the inner;
    // the right one is the only one std reads both names back from. (A
    // wrong length word leaves the real one as it was, which cannot be
    // both names' lengths; a wrong pointer word leaves `None`.)
    let names = [c"rawthread", c"the name rawthread proves"];
    let mut found = None;
    for ptr_word in INNER..WORDS {
        for len_word in (INNER..WORDS).filter(|&w| w != ptr_word) {
            let read_back = names.iter().all(|name| {
                let mut scratch = copy;
                scratch[ptr_word] = name.as_ptr() as usize;
                scratch[len_word] = name.to_bytes_with_nul().len();
                // SAFETY: a `Thread` is one word (checked), the pointer to
                // its allocation; this one points at `scratch`, a copy of
                // `thread`'s allocation that outlives it, and is never
                // dropped or cloned: only `name()` reads it, which reads the
                // inner only. A wrong place is written in `scratch` alone.
                let fake = ManuallyDrop::new(unsafe { mem::transmute::<usize, Thread>(scratch.as_ptr() as usize) });
                // Compared as pointer and length: never read through.
                let read = fake.name().map(|s| (s.as_ptr() as usize, s.len()));
                read == Some((name.as_ptr() as usize, name.to_bytes().len()))
            });
            if read_back {
                if found.is_some() {
                    return None;
                }
                found = Some(Slots { ptr: ptr_word, len: len_word });
            }
        }
    }
    found
}
