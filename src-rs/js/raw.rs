//! The per-operation calls, registered as plain N-API callbacks (why: the hot-path rule
//! at the top of `js/mod.rs`). These read their number arguments with
//! `napi_get_value_double`, call the same Rust functions the rest of the crate uses, and
//! throw errors in the wire form `lib/errors.ts` decodes. Their TypeScript types are
//! declared in `lib/native.ts` (the generated `index.d.ts` does not know them).

use crate::error::{Result, ShmError};
use crate::js::args::id;
use napi::bindgen_prelude::{JsValue, Object};
use napi::sys;
use napi::Env;
use napi_derive::napi;
use std::ffi::CStr;
use std::ptr;

/// What a callback returns to JavaScript.
enum Ret {
    Number(f64),
    Undefined,
}

/// Reads exactly `N` number arguments.
///
/// # Safety
/// `env` and `info` are the ones N-API passed to the running callback.
unsafe fn numbers<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<[f64; N]> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    // SAFETY: argv has room for argc values; the other out-pointers are null (unused).
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok || argc < N {
        return Err(ShmError::type_error(format!("expected {N} arguments")));
    }
    let mut out = [0f64; N];
    for (i, v) in argv.iter().enumerate() {
        // SAFETY: v is a live argument handle of this callback.
        if unsafe { sys::napi_get_value_double(env, *v, &mut out[i]) } != sys::Status::napi_ok {
            return Err(ShmError::type_error(format!(
                "argument {} must be of type number",
                i + 1
            )));
        }
    }
    Ok(out)
}

/// Converts a result into the callback's return value, throwing on error.
///
/// # Safety
/// `env` is the running callback's.
unsafe fn finish(env: sys::napi_env, r: Result<Ret>) -> sys::napi_value {
    let mut out = ptr::null_mut();
    match r {
        Ok(Ret::Number(n)) => {
            // SAFETY: creating a value in the running callback's env.
            unsafe { sys::napi_create_double(env, n, &mut out) };
        }
        Ok(Ret::Undefined) => {
            // SAFETY: as above.
            unsafe { sys::napi_get_undefined(env, &mut out) };
        }
        Err(e) => {
            let msg = std::ffi::CString::new(e.to_wire().replace('\0', " ")).unwrap_or_default();
            // SAFETY: msg is a NUL-terminated string that outlives the call.
            unsafe { sys::napi_throw_error(env, ptr::null(), msg.as_ptr()) };
            return ptr::null_mut();
        }
    }
    out
}

unsafe extern "C" fn heap_malloc(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with this callback's env and info.
    let r = unsafe { numbers::<3>(env, info) }.and_then(|[h, size, align]| {
        crate::js::heap::heap_malloc(id(h)?, size, align).map(Ret::Number)
    });
    // SAFETY: as above.
    unsafe { finish(env, r) }
}

unsafe extern "C" fn heap_free(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with this callback's env and info.
    let r = unsafe { numbers::<2>(env, info) }
        .and_then(|[h, off]| crate::js::heap::heap_free(id(h)?, off).map(|()| Ret::Undefined));
    // SAFETY: as above.
    unsafe { finish(env, r) }
}

unsafe extern "C" fn heap_realloc(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with this callback's env and info.
    let r = unsafe { numbers::<3>(env, info) }.and_then(|[h, off, size]| {
        crate::js::heap::heap_realloc(id(h)?, off, size).map(Ret::Number)
    });
    // SAFETY: as above.
    unsafe { finish(env, r) }
}

unsafe extern "C" fn lock_wake(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with this callback's env and info.
    let r = unsafe { numbers::<2>(env, info) }
        .and_then(|[m, off]| crate::js::lock::lock_wake(id(m)?, off).map(|()| Ret::Undefined));
    // SAFETY: as above.
    unsafe { finish(env, r) }
}

unsafe extern "C" fn sem_wake(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with this callback's env and info.
    let r = unsafe { numbers::<3>(env, info) }.and_then(|[m, off, n]| {
        crate::js::semaphore::sem_wake(id(m)?, off, id(n)?).map(|()| Ret::Undefined)
    });
    // SAFETY: as above.
    unsafe { finish(env, r) }
}

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

const FAST: [(&CStr, Callback); 5] = [
    (c"heapMalloc", heap_malloc),
    (c"heapFree", heap_free),
    (c"heapRealloc", heap_realloc),
    (c"lockWake", lock_wake),
    (c"semWake", sem_wake),
];

/// Adds the raw callbacks to the module's exports.
#[napi(module_exports)]
pub fn fast_exports(exports: Object, env: Env) -> napi::Result<()> {
    for (name, cb) in FAST {
        let mut f = ptr::null_mut();
        // SAFETY: a static NUL-terminated name and a callback with N-API's signature.
        let status = unsafe {
            sys::napi_create_function(
                env.raw(),
                name.as_ptr(),
                -1,
                Some(cb),
                ptr::null_mut(),
                &mut f,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason(format!(
                "napi_create_function {name:?}: {status}"
            )));
        }
        // SAFETY: `exports` is the live exports object; `f` the function just created.
        let status = unsafe {
            sys::napi_set_named_property(env.raw(), exports.value().value, name.as_ptr(), f)
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason(format!(
                "exporting {name:?}: {status}"
            )));
        }
    }
    Ok(())
}
