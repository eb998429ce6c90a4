//! Giving the heap the engine freed back to the system while it idles.
//!
//! glibc keeps freed heap pages for reuse and returns them to the system by itself only from
//! the top of the heap. Parsing a 1 000-contact roster at login leaves about a megabyte free
//! below data that lives on, resident for the life of the daemon (`bench/roster-memory`:
//! `malloc_trim(0)` gave back 0.6–1.1 MiB in every case). So an idle engine returns free
//! pages once its gathering after an idle tick is over — a wake-up that happens anyway — when
//! the allocator holds enough free memory for the walk to matter.
//!
//! Android's (Scudo) and Apple's allocators return free pages on their own; there this does
//! nothing.
//!
//! (After the walk glibc's free lists still hold the released pages, so the free total alone
//! cannot tell whether another walk would give anything back: `FreeHeap` remembers it.)

/// Free heap (bytes, all arenas) that must have come since the last walk for another.
const WORTH_RELEASING: usize = 256 * 1024;

/// When the free heap was last given back. glibc keeps released pages in its free lists
/// (they still count as free), so what decides is how much more is free since then; the low
/// point in between counts too, as pages reused and freed again are resident again.
#[derive(Default)]
pub(super) struct FreeHeap {
    low: usize,
}

impl FreeHeap {
    /// Gives free heap pages back to the system if at least `WORTH_RELEASING` more bytes are
    /// free than at the last walk or the lowest point since; says whether it walked the heap.
    pub(super) fn release(&mut self) -> bool {
        let walk = imp::free_bytes().is_some_and(|free| self.worth_a_walk(free));
        if walk {
            imp::release();
        }
        walk
    }

    fn worth_a_walk(&mut self, free: usize) -> bool {
        if free < self.low.saturating_add(WORTH_RELEASING) {
            self.low = self.low.min(free);
            return false;
        }
        self.low = free;
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    /// Bytes the allocator holds free, all arenas.
    pub(super) fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 (glibc ≥ 2.33) only reads the allocator's statistics under its
        // arenas' locks and returns them by value.
        Some(unsafe { libc::mallinfo2() }.fordblks)
    }

    pub(super) fn release() {
        // SAFETY: malloc_trim(0) only releases (madvise) whole free pages inside free chunks
        // and the heap's top; live allocations are untouched.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn free_bytes() -> Option<usize> {
        None
    }

    pub(super) fn release() {}
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Private (anonymous) resident memory of this process, bytes.
    fn rss_anon() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        let kib: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib * 1024
    }

    #[test]
    fn freed_heap_below_live_data_goes_back_to_the_system() {
        const CHUNK: usize = 4096;
        const FREED: usize = 48 * 1024 * 1024;
        let mut heap = FreeHeap::default();
        // Small chunks come from the heap (not mmap), written so that they are resident; the
        // one kept after them stops glibc from trimming the top by itself on free.
        let mut chunks: Vec<Vec<u8>> = (0..FREED / CHUNK).map(|_| vec![1u8; CHUNK]).collect();
        let keep = vec![2u8; CHUNK];
        chunks.clear();
        chunks.shrink_to_fit();
        let before = rss_anon();
        assert!(heap.release(), "48 MiB free and no walk");
        let after = rss_anon();
        // Other tests run in parallel and allocate too: half of it is proof enough.
        assert!(
            before.saturating_sub(after) >= FREED / 2,
            "RssAnon {before} → {after} bytes"
        );
        assert_eq!(keep[0], 2);
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn a_walk_only_when_enough_more_is_free_than_at_the_last_or_the_low_point() {
        let mut heap = FreeHeap::default();
        assert!(!heap.worth_a_walk(100 * KIB));
        assert!(heap.worth_a_walk(1024 * KIB));
        // Released pages still count as free: the same total is not worth another walk, nor
        // a little more.
        assert!(!heap.worth_a_walk(1024 * KIB));
        assert!(!heap.worth_a_walk(1200 * KIB));
        assert!(heap.worth_a_walk(1300 * KIB));
        // Reused (less free), then freed again: those pages are resident again.
        assert!(!heap.worth_a_walk(400 * KIB));
        assert!(!heap.worth_a_walk(600 * KIB));
        assert!(heap.worth_a_walk(700 * KIB));
    }
}
