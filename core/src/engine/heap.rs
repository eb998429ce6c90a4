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

/// Free heap (bytes, all arenas) below which the walk is not worth it.
const WORTH_RELEASING: usize = 256 * 1024;

/// Returns free heap pages to the system if the allocator holds at least `WORTH_RELEASING`
/// bytes of free memory; says whether it walked the heap.
pub(super) fn release_free_heap() -> bool {
    imp::release(WORTH_RELEASING)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) fn release(at_least: usize) -> bool {
        // SAFETY: mallinfo2 (glibc ≥ 2.33) only reads the allocator's statistics under its
        // arenas' locks and returns them by value.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free < at_least {
            return false;
        }
        // SAFETY: malloc_trim(0) only releases (madvise) whole free pages inside free chunks
        // and the heap's top; live allocations are untouched.
        unsafe { libc::malloc_trim(0) };
        true
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn release(_at_least: usize) -> bool {
        false
    }
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
        // Small chunks come from the heap (not mmap), written so that they are resident; the
        // one kept after them stops glibc from trimming the top by itself on free.
        let mut chunks: Vec<Vec<u8>> = (0..FREED / CHUNK).map(|_| vec![1u8; CHUNK]).collect();
        let keep = vec![2u8; CHUNK];
        chunks.clear();
        chunks.shrink_to_fit();
        let before = rss_anon();
        assert!(release_free_heap(), "48 MiB free and no walk");
        let after = rss_anon();
        // Other tests run in parallel and allocate too: half of it is proof enough.
        assert!(
            before.saturating_sub(after) >= FREED / 2,
            "RssAnon {before} → {after} bytes"
        );
        assert_eq!(keep[0], 2);
    }
}
