//! Memory the children write to

use std::ffi::{c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::AtomicU64;

/// An anonymous mapping, unmapped on drop.
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl Mapping {
    /// `flags` is `MAP_SHARED` or `MAP_PRIVATE` (plus extras such as
    /// `MAP_STACK`); the mapping is always anonymous, readable and writable.
    pub(crate) fn new(len: usize, flags: c_int) -> Mapping {
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // overlaps nothing that exists.
        let ptr = unsafe {
            libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(ptr != libc::MAP_FAILED, "mmap of {len} bytes: {}", io::Error::last_os_error());
        Mapping { ptr: ptr.cast(), len }
    }

    /// The first 8 bytes as an atomic.
    pub(crate) fn stamp(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes and zeroed
        // (a valid AtomicU64), and lives as long as the borrow of `self`.
        unsafe { &*self.ptr.cast::<AtomicU64>() }
    }

    pub(crate) fn end(&self) -> *mut c_void {
        self.ptr.wrapping_add(self.len).cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which no reference outlives (`stamp`
        // borrows `self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
