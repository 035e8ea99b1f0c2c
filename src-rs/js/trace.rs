//! `traceInit`: forwards this JavaScript thread's rare events (`crate::trace`) to
//! `lib/trace.ts`, which publishes them on `node:diagnostics_channel`. Delivery is
//! asynchronous (a threadsafe function, weak: it never keeps the process alive), so a
//! subscriber never runs inside a heap operation.

use crate::trace::{self, Event};
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

/// Event codes `lib/trace.ts` knows.
const HEAP_REPAIRED: f64 = 1.0;

type Tsfn = ThreadsafeFunction<Vec<f64>, (), Vec<f64>, Status, false, true>;

/// Sets up this thread's event channel: `onEvent` receives `[code, ...fields]`: for a heap
/// repair `[1, address of the heap region, reason (1 owner died, 2 interrupted)]`.
/// Called once per JavaScript thread by `lib/trace.ts`.
#[napi]
pub fn trace_init(on_event: Function<Vec<f64>, ()>) -> napi::Result<()> {
    let tsfn: Tsfn = on_event
        .build_threadsafe_function::<Vec<f64>>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(|ctx| Ok(ctx.value))?;
    trace::set_thread_hook(Box::new(move |e| {
        let fields = match e {
            Event::HeapRepaired { address, reason } => {
                vec![HEAP_REPAIRED, address as f64, reason as u32 as f64]
            }
        };
        // A failure means the environment is shutting down: nobody is left to tell.
        let _: Status = tsfn.call(fields, ThreadsafeFunctionCallMode::NonBlocking);
    }));
    Ok(())
}
