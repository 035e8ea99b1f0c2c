//! Rare events worth telling the JavaScript side about (it publishes them on
//! `node:diagnostics_channel`, `lib/trace.ts`): heap repairs after a process died inside
//! the heap. Events are emitted only on paths that are rare by nature (a repair), so
//! tracing costs the hot paths nothing: there is no check, flag or counter on them.
//!
//! The core emits; the JavaScript boundary (`js/trace.rs`) installs, per JavaScript
//! thread, the hook that forwards events to that thread's event loop. A thread without a
//! hook (the Rust tests, the waiter threads) drops them.

use std::cell::RefCell;

/// Why a heap was repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairReason {
    /// Its lock was taken over from a holder that died.
    OwnerDied = 1,
    /// An operation found the heap's busy flag set: a process died inside an operation
    /// (and its lock was recovered earlier), or an operation found it corrupt.
    Interrupted = 2,
}

/// An event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The heap whose region starts at absolute `address` was rebuilt from its block chain.
    HeapRepaired {
        /// Address of the heap region (mapping address + heap offset) in this process.
        address: usize,
        /// Why.
        reason: RepairReason,
    },
}

type Hook = Box<dyn Fn(Event)>;

thread_local! {
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Installs this thread's hook (replacing an earlier one).
pub fn set_thread_hook(hook: Hook) {
    HOOK.with(|h| *h.borrow_mut() = Some(hook));
}

/// Tells this thread's hook, if any.
#[cold]
pub fn emit(event: Event) {
    let _ = HOOK.try_with(|h| {
        if let Ok(hook) = h.try_borrow() {
            if let Some(hook) = hook.as_ref() {
                hook(event);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn events_reach_this_threads_hook_only() {
        emit(Event::HeapRepaired {
            address: 1,
            reason: RepairReason::OwnerDied,
        }); // no hook: dropped
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        set_thread_hook(Box::new(move |e| s.borrow_mut().push(e)));
        let e = Event::HeapRepaired {
            address: 64,
            reason: RepairReason::Interrupted,
        };
        emit(e);
        std::thread::spawn(move || emit(e)).join().unwrap();
        assert_eq!(*seen.borrow(), vec![e], "another thread has no hook");
    }
}
