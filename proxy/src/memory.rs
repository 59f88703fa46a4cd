//! Gives memory back to the operating system after a burst.
//!
//! glibc's allocator keeps what a burst of connections freed (thousands of
//! slow clients, say) in its arenas for reuse, so a sidecar's RSS would stay
//! at the burst's peak for the rest of its life. Every few seconds the proxy
//! asks the allocator how much it holds free; when that has grown by more
//! than [`KEEP_FREE`] since its low point, the free pages go back with
//! `malloc_trim`. Pages already returned still count as free to glibc, so
//! measuring from the low point is what keeps a trimmed heap from being
//! trimmed again on every tick. Steady traffic does not move the figure and
//! pays nothing but the check, a few microseconds. Other C libraries: nothing
//! to do.

/// Free memory the allocator may gain for reuse before it is returned.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const KEEP_FREE: usize = 16 << 20;

/// The allocator's free memory at its lowest since the last trim.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    low: Option<usize>,
}

impl Trimmer {
    /// Returns the allocator's free pages to the OS when its free memory has
    /// grown by more than [`KEEP_FREE`]; the bytes it held free when it did.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(crate) fn tick(&mut self) -> Option<usize> {
        // SAFETY: a plain glibc call with no arguments to uphold; mallinfo2
        // (glibc 2.33+) sums every arena without wrapping at 4 GiB.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        let low = self.low.map_or(free, |low| low.min(free));
        if free - low <= KEEP_FREE {
            self.low = Some(low);
            return None;
        }
        // SAFETY: as above; 0 keeps no padding at the heap's top.
        unsafe { libc::malloc_trim(0) };
        self.low = Some(free);
        Some(free)
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(crate) fn tick(&mut self) -> Option<usize> {
        None
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// A burst freed is returned once, and a trimmed heap is not trimmed
    /// again on the next tick.
    #[test]
    fn a_freed_burst_is_returned_once() {
        let mut trimmer = Trimmer::default();
        trimmer.tick();
        // 64 MiB in blocks glibc serves from its heap (under the mmap
        // threshold), each followed by a small block that stays, so freeing
        // them leaves holes inside the heap rather than free space at its
        // top (which glibc gives back by itself), as a burst of connections
        // among longer-lived allocations does.
        let mut burst = Vec::new();
        let mut pins = Vec::new();
        for i in 0..2048 {
            burst.push(vec![i as u8; 32 << 10]);
            pins.push(vec![1u8; 64]);
        }
        drop(burst);
        let freed = trimmer.tick().expect("64 MiB freed is returned");
        assert!(freed >= 48 << 20, "allocator held {freed} bytes free");
        assert_eq!(trimmer.tick(), None, "nothing new to return");
        drop(pins);
    }
}
