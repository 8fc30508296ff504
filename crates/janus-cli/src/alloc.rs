//! The process-wide allocator policy of the `janus` binary.

/// Makes glibc's allocator keep freed memory for reuse instead of handing every
/// large buffer back to the kernel: without this each large temporary (tens of
/// MB in the VQ decoder and vision tower) is a fresh `mmap`, and zeroing its pages
/// costs about a quarter of the VQ decode. Called once, after the weights are
/// loaded (so the temporaries of loading go back to the system); the process
/// then keeps its peak footprint until it exits. A no-op elsewhere than
/// Linux/glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before heavy use.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Hands the memory [`retain_freed_memory`] kept back to the system (between
/// the phases of a benchmark that reports each phase's peak).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
