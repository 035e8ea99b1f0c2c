//! Waiting for a 32-bit word in shared memory to change: the one blocking primitive the
//! JavaScript-side containers and primitives (`Channel`, `Barrier`, `Event`, `RWLock`)
//! need. Their state machines run in JavaScript with `Atomics` on the mapping; when one
//! must sleep it names a word and the value it saw there, and sleeps here until the word
//! holds something else (or the deadline passes). Whoever changes the state bumps or
//! rewrites the word and wakes the sleepers.
//!
//! | step                     | result                                              |
//! |--------------------------|-----------------------------------------------------|
//! | `word != expected`       | `Done(true)`: changed (the caller re-reads state)   |
//! | deadline passed          | `Done(false)`: timed out                            |
//! | otherwise                | sleep on `word == expected`, at most [`RECHECK_MS`] |
//!
//! A wake-up that leaves the word unchanged sleeps again: the protocol above must change
//! the word to release a waiter (a bare wake is never enough), which makes lost and
//! spurious wake-ups harmless. Sleeps are sliced like every other wait so a worker being
//! terminated and an aborted async wait are noticed promptly.

use super::{Step, RECHECK_MS};
use crate::sys::Deadline;
use std::sync::atomic::{AtomicU32, Ordering};

/// A wait for a word to differ from `expected`.
#[derive(Debug, Clone, Copy)]
pub struct WordWait {
    expected: u32,
    deadline: Option<Deadline>,
}

impl WordWait {
    /// A wait until the word is not `expected`, or `deadline` (`None`: forever).
    pub fn new(expected: u32, deadline: Option<Deadline>) -> WordWait {
        WordWait { expected, deadline }
    }

    /// One step: `Done(true)` once the word changed, `Done(false)` at the deadline.
    pub fn poll<'a>(&mut self, word: &'a AtomicU32) -> Step<'a, bool> {
        // SeqCst: the JavaScript side publishes with Atomics (sequentially consistent)
        // and announces its sleep the same way; this load takes part in that order.
        if word.load(Ordering::SeqCst) != self.expected {
            return Step::Done(true);
        }
        if self.deadline.is_some_and(|d| d.passed()) {
            return Step::Done(false);
        }
        let slice = Deadline::slice_ms(RECHECK_MS);
        Step::Sleep {
            word,
            expected: self.expected,
            until: Some(self.deadline.map_or(slice, |d| d.min(slice))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::block_on;
    use crate::sys;

    #[test]
    fn returns_when_the_word_changes_or_the_deadline_passes() {
        let r = crate::memory::mapping::shared_anon_for_tests(4096);
        let base = r.addr();
        // SAFETY: 4-aligned, inside the live region, which outlives the thread (joined).
        let word = unsafe { &*(base as *const AtomicU32) };
        let t0 = std::time::Instant::now();
        let mut w = WordWait::new(0, Some(Deadline::after_ms(30.0)));
        assert!(!block_on(|| w.poll(word)));
        assert!(t0.elapsed().as_millis() >= 29);

        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // SAFETY: as above.
            let word = unsafe { &*(base as *const AtomicU32) };
            word.store(1, Ordering::SeqCst);
            sys::futex_wake(word, u32::MAX);
        });
        let mut w = WordWait::new(0, None);
        assert!(block_on(|| w.poll(word)));
        t.join().unwrap();
        // Already different: no sleep at all.
        let mut w = WordWait::new(0, Some(Deadline::after_ms(0.0)));
        assert!(block_on(|| w.poll(word)));
        r.close();
    }
}
