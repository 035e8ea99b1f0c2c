//! `unlinkOnExit` at the boundary: the names each JavaScript thread asked to remove when
//! it ends, kept natively so that they go also where no JavaScript runs at the end: a
//! worker stopped by `worker.terminate()` or by its process exiting fires no `'exit'`
//! event, but its environment's cleanup hook runs; a process ending by a signal removes
//! every thread's names from the main thread's signal handler (`exitUnlinkRun(true)`).

use crate::memory::segment;
use napi::Env;
use napi_derive::napi;
use std::sync::Mutex;
use std::thread::ThreadId;

/// One name to remove: the thread that asked, the name, the uid it must still name.
struct Pending {
    thread: ThreadId,
    name: String,
    uid: u64,
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

thread_local! {
    /// Whether this JavaScript thread registered its cleanup hook.
    static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn pending() -> std::sync::MutexGuard<'static, Vec<Pending>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the names of `thread` (or of every thread), each only if it still names the
/// segment that was created (a segment re-created under the name by someone else stays).
fn run(thread: Option<ThreadId>) {
    let mine: Vec<Pending> = {
        let mut all = pending();
        let (take, keep) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|p| thread.is_none_or(|t| p.thread == t));
        *all = keep;
        take
    };
    for p in mine {
        // Exiting: nobody is left to report a failure to, and the other names still go.
        let _ = segment::unlink_if_uid(&p.name, p.uid);
    }
}

/// Removes `name` when this thread ends if it still names segment `uid` (16 hex digits).
///
/// # Errors
/// TypeError for a malformed uid; the cleanup hook's registration error.
#[napi]
pub fn exit_unlink_add(env: Env, name: String, uid: String) -> napi::Result<()> {
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
    let mut all = pending();
    all.retain(|p| !(p.thread == thread && p.name == name));
    all.push(Pending { thread, name, uid });
    Ok(())
}

/// Forgets `name` for this thread (it was unlinked already).
#[napi]
pub fn exit_unlink_forget(name: String) {
    let thread = std::thread::current().id();
    pending().retain(|p| !(p.thread == thread && p.name == name));
}

/// Removes the pending names now: this thread's, or (`all`) every thread's of the process.
#[napi]
pub fn exit_unlink_run(all: bool) {
    run((!all).then(|| std::thread::current().id()))
}
