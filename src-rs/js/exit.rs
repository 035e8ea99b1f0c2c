//! `unlinkOnExit` at the boundary: the names each JavaScript thread asked to remove when
//! it ends, kept natively so that they go also where no JavaScript runs at the end: a
//! worker stopped by `worker.terminate()` or by its process exiting fires no `'exit'`
//! event, but its environment's cleanup hook runs; a process ending by a signal removes
//! every thread's names from the main thread's signal handler (`exitUnlinkRun(true)`).

use crate::memory::segment;
use napi::Env;
use napi_derive::napi;
use std::collections::HashMap;
use std::sync::Mutex;
use std::thread::ThreadId;

/// The names to remove: by the thread that asked and the name, the uid it must still name.
struct Pending {
    names: HashMap<(ThreadId, String), u64>,
    /// How many names there may be before the next [`prune`].
    prune_at: usize,
}

/// The fewest names a [`prune`] looks at (below that, nothing is pruned).
const PRUNE_MIN: usize = 256;

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

thread_local! {
    /// Whether this JavaScript thread registered its cleanup hook.
    static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on the list (made on first use).
fn with_pending<T>(f: impl FnOnce(&mut Pending) -> T) -> T {
    let mut guard = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(|| Pending {
        names: HashMap::new(),
        prune_at: PRUNE_MIN,
    }))
}

/// Drops the names that no longer name their segment: removed (or re-created) by another
/// process or the CLI, which this list never hears of. Exit would leave them alone anyway;
/// a name it cannot check now (`EMFILE`, say) stays. Each prune looks at every name and
/// comes when the list has doubled since the last one, so the list stays within twice the
/// names still there (or [`PRUNE_MIN`]) at an amortized constant cost per name added.
/// Returns whether any name was dropped.
fn prune(p: &mut Pending) -> bool {
    let before = p.names.len();
    p.names
        .retain(|(_, name), uid| segment::names_uid(name, *uid).unwrap_or(true));
    p.prune_at = (2 * p.names.len()).max(PRUNE_MIN);
    p.names.len() != before
}

/// Removes the names of `thread` (or of every thread), each only if it still names the
/// segment that was created (a segment re-created under the name by someone else stays).
fn run(thread: Option<ThreadId>) {
    let mine: Vec<(String, u64)> = with_pending(|p| {
        let (take, keep) = std::mem::take(&mut p.names)
            .into_iter()
            .partition(|((t, _), _)| thread.is_none_or(|me| *t == me));
        p.names = keep;
        take.into_iter()
            .map(|((_, name), uid)| (name, uid))
            .collect()
    });
    for (name, uid) in mine {
        // Exiting: nobody is left to report a failure to, and the other names still go.
        let _ = segment::unlink_if_uid(&name, uid);
    }
}

/// Removes `name` when this thread ends if it still names segment `uid` (16 hex digits).
/// Returns whether names of the list that were removed by someone else were dropped from
/// it (the caller's copy of its names may then hold names the list no longer has).
///
/// # Errors
/// TypeError for a malformed uid; the cleanup hook's registration error.
#[napi]
pub fn exit_unlink_add(env: Env, name: String, uid: String) -> napi::Result<bool> {
    let uid = u64::from_str_radix(&uid, 16)
        .ok()
        .filter(|_| uid.len() == 16)
        .ok_or_else(|| {
            crate::error::ShmError::type_error(format!(
                "The \"uid\" argument must be 16 hex digits; got {uid:?}"
            ))
        })?;
    if !HOOKED.with(|h| h.replace(true)) {
        let me = std::thread::current().id();
        env.add_env_cleanup_hook(me, |t| run(Some(t)))?;
    }
    let thread = std::thread::current().id();
    Ok(with_pending(|p| {
        p.names.insert((thread, name), uid);
        p.names.len() >= p.prune_at && prune(p)
    }))
}

/// Forgets `name` for this thread (it was unlinked already).
#[napi]
pub fn exit_unlink_forget(name: String) {
    let thread = std::thread::current().id();
    with_pending(|p| p.names.remove(&(thread, name)));
}

/// The names this thread has pending, in no particular order.
#[napi]
#[must_use]
pub fn exit_unlink_pending() -> Vec<String> {
    let thread = std::thread::current().id();
    with_pending(|p| {
        p.names
            .keys()
            .filter(|(t, _)| *t == thread)
            .map(|(_, name)| name.clone())
            .collect()
    })
}

/// Removes the pending names now: this thread's, or (`all`) every thread's of the process.
#[napi]
pub fn exit_unlink_run(all: bool) {
    run((!all).then(|| std::thread::current().id()))
}
