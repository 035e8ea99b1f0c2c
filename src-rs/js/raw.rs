//! The per-operation calls, registered as plain N-API callbacks (why: the hot-path rule
//! at the top of `js/mod.rs`). These read their number arguments with
//! `napi_get_value_double`, call the same Rust functions the rest of the crate uses, and
//! throw errors in the wire form `lib/errors.ts` decodes. Their TypeScript types are
//! declared in `lib/native.ts` (the generated `index.d.ts` does not know them).

use crate::error::{Result, ShmError};
use crate::js::args::id;
use crate::js::mapping::{create_segment, map_raw, open_segment, out};
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
    /// A value made in the callback's env.
    Value(sys::napi_value),
}

/// The callback's first `N` argument handles (missing ones read as `undefined`).
///
/// # Safety
/// `env` and `info` are the ones N-API passed to the running callback.
unsafe fn args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<[sys::napi_value; N]> {
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
    if status != sys::Status::napi_ok {
        return Err(ShmError::type_error(format!("expected {N} arguments")));
    }
    Ok(argv)
}

/// Argument `i` (0-based, for the message) as a number.
///
/// # Safety
/// `env` is the running callback's and `v` one of its argument handles.
unsafe fn number(env: sys::napi_env, v: sys::napi_value, i: usize) -> Result<f64> {
    let mut out = 0f64;
    // SAFETY: v is a live argument handle of this callback.
    let status = unsafe { sys::napi_get_value_double(env, v, &mut out) };
    if status != sys::Status::napi_ok {
        return Err(ShmError::type_error(format!(
            "argument {} must be of type number",
            i + 1
        )));
    }
    Ok(out)
}

/// Exactly `N` number arguments.
///
/// # Safety
/// `env` and `info` are the ones N-API passed to the running callback.
unsafe fn numbers<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<[f64; N]> {
    // SAFETY: forwarded.
    let argv = unsafe { args::<N>(env, info) }?;
    let mut out = [0f64; N];
    for (i, v) in argv.iter().enumerate() {
        // SAFETY: forwarded.
        out[i] = unsafe { number(env, *v, i) }?;
    }
    Ok(out)
}

/// Argument `i` as a string (UTF-8).
///
/// # Safety
/// As [`number`].
unsafe fn string(env: sys::napi_env, v: sys::napi_value, i: usize) -> Result<String> {
    let bad = || ShmError::type_error(format!("argument {} must be of type string", i + 1));
    let mut len = 0usize;
    // SAFETY: a length query (null buffer) on a live handle.
    let status = unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
    if status != sys::Status::napi_ok {
        return Err(bad());
    }
    let mut buf = vec![0u8; len + 1];
    let mut got = 0usize;
    // SAFETY: `buf` has room for `len` bytes and the terminating NUL N-API writes.
    if unsafe {
        sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), len + 1, &mut got)
    } != sys::Status::napi_ok
    {
        return Err(bad());
    }
    buf.truncate(got);
    String::from_utf8(buf).map_err(|_| bad())
}

/// Argument `i` as the numbers of a `Float64Array` of at least `min` elements: written in
/// place (JavaScript reads them after the call).
///
/// # Safety
/// As [`number`]; the returned slice must not outlive the callback.
unsafe fn f64_array<'a>(
    env: sys::napi_env,
    v: sys::napi_value,
    i: usize,
    min: usize,
) -> Result<&'a mut [f64]> {
    let mut kind = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    // SAFETY: queries of a live handle; the out-pointers are valid (buffer and offset
    // are not needed and may be null).
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            v,
            &mut kind,
            &mut len,
            &mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok
        || kind != sys::TypedarrayType::float64_array
        || len < min
        || data.is_null()
    {
        return Err(ShmError::type_error(format!(
            "argument {} must be a Float64Array of at least {min} elements",
            i + 1
        )));
    }
    // SAFETY: N-API says `data` points at `len` f64s of a live, attached typed array,
    // which JavaScript cannot touch while this callback runs.
    Ok(unsafe { std::slice::from_raw_parts_mut(data.cast::<f64>(), len) })
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
        Ok(Ret::Value(v)) => out = v,
        Err(e) => {
            let msg = std::ffi::CString::new(e.to_wire().replace('\0', " ")).unwrap_or_default();
            // SAFETY: msg is a NUL-terminated string that outlives the call.
            unsafe { sys::napi_throw_error(env, ptr::null(), msg.as_ptr()) };
            return ptr::null_mut();
        }
    }
    out
}

/// Defines the raw callback `$name`, which returns to JavaScript what `$body` (a
/// `Result<Ret>`) gives, throwing its error. The body runs in an unsafe context: it may
/// call the readers above with `$env` and `$info`, the ones N-API passed in.
macro_rules! raw_callback {
    ($(#[$doc:meta])* $name:ident, |$env:ident, $info:ident| { $($body:tt)* }) => {
        $(#[$doc])*
        unsafe extern "C" fn $name(
            $env: sys::napi_env,
            $info: sys::napi_callback_info,
        ) -> sys::napi_value {
            // SAFETY: every call in the body gets N-API's env and info of this callback,
            // or its handles (the closure is inlined: no allocation, no indirect call).
            let r: Result<Ret> = (|| unsafe { $($body)* })();
            // SAFETY: as above.
            unsafe { finish($env, r) }
        }
    };
}

raw_callback!(
    /// `segmentOpen(name, fixed, readOnly, out)`: see `js/mapping.rs` `open_segment`.
    segment_open, |env, info| {
        let [n, fixed, ro, o] = args::<4>(env, info)?;
        let name = string(env, n, 0)?;
        let (fixed, ro) = (number(env, fixed, 1)?, number(env, ro, 2)?);
        let out = f64_array(env, o, 3, out::LEN)?;
        open_segment(&name, fixed, ro != 0.0)?.register(out);
        Ok(Ret::Undefined)
    }
);

raw_callback!(
    /// `segmentCreate(name, size, permissions, fixed, flags, out)`, `flags` bit 0 prefault,
    /// bit 1 reserve: see `js/mapping.rs` `create_segment`.
    segment_create, |env, info| {
        let [n, size, perms, fixed, flags, o] = args::<6>(env, info)?;
        let name = string(env, n, 0)?;
        let (size, perms, fixed) = (
            number(env, size, 1)?,
            number(env, perms, 2)?,
            number(env, fixed, 3)?,
        );
        let flags = number(env, flags, 4)? as u32;
        let out = f64_array(env, o, 5, out::LEN)?;
        create_segment(&name, size, perms, fixed, flags & 1 != 0, flags & 2 != 0)?.register(out);
        Ok(Ret::Undefined)
    }
);

raw_callback!(
    /// `mapRaw(address, size, protection, flags, fd, offset, out)`: see `js/mapping.rs`
    /// `map_raw`.
    map_raw_cb, |env, info| {
        let argv = args::<7>(env, info)?;
        let mut x = [0f64; 6];
        for (i, v) in argv[..6].iter().enumerate() {
            x[i] = number(env, *v, i)?;
        }
        let out = f64_array(env, argv[6], 6, out::LEN)?;
        map_raw(x[0], x[1], x[2], x[3], x[4], x[5])?.register(out);
        Ok(Ret::Undefined)
    }
);

raw_callback!(
    /// `anonymousCreate(size, flags, out)`, `flags` bit 0 prefault, bit 1 reserve: see
    /// `js/anonymous.rs`.
    anonymous_create, |env, info| {
        let [size, flags, o] = args::<3>(env, info)?;
        let (size, flags) = (number(env, size, 0)?, number(env, flags, 1)? as u32);
        let out = f64_array(env, o, 2, out::LEN)?;
        crate::js::anonymous::create_anonymous(size, flags & 1 != 0, flags & 2 != 0)?.register(out);
        Ok(Ret::Undefined)
    }
);

raw_callback!(
    /// `mappingFromFd(fd, fixed, readOnly, out)`: see `js/anonymous.rs`.
    mapping_from_fd, |env, info| {
        let [fd, fixed, ro, o] = args::<4>(env, info)?;
        let (fd, fixed, ro) = (
            number(env, fd, 0)?,
            number(env, fixed, 1)?,
            number(env, ro, 2)?,
        );
        let out = f64_array(env, o, 3, out::LEN)?;
        crate::js::anonymous::from_fd(fd, fixed, ro != 0.0)?.register(out);
        Ok(Ret::Undefined)
    }
);

raw_callback!(
    /// `mappingClose(id, buffer?)`: detaches `buffer` (the ArrayBuffer over the whole mapping,
    /// if JavaScript made one), then unmaps.
    mapping_close, |env, info| {
        let [m, buf] = args::<2>(env, info)?;
        let id = id(number(env, m, 0)?)?;
        let mut is_buffer = false;
        if !buf.is_null()
            && sys::napi_is_arraybuffer(env, buf, &mut is_buffer) == sys::Status::napi_ok
            && is_buffer
            && sys::napi_detach_arraybuffer(env, buf) != sys::Status::napi_ok
        {
            return Err(ShmError::new(
                "EINVAL",
                "the mapping's ArrayBuffer cannot be detached",
            ));
        }
        crate::js::mapping::close(id).map(|()| Ret::Undefined)
    }
);

/// Defines the raw callback `$name`, which reads exactly `$n` number arguments and
/// returns to JavaScript what `$body` (a `Result<Ret>`) gives, throwing its error.
macro_rules! number_callback {
    ($(#[$doc:meta])* $name:ident, $n:literal, |$env:ident, [$($arg:ident),+]| $body:expr) => {
        raw_callback!($(#[$doc])* $name, |$env, info| {
            let [$($arg),+] = numbers::<$n>($env, info)?;
            $body
        });
    };
}

number_callback!(
    /// `heapMalloc(id, size, align)`.
    heap_malloc, 3, |env, [h, size, align]| crate::js::heap::heap_malloc(id(h)?, size, align).map(Ret::Number)
);
number_callback!(
    /// `heapFree(id, offset)`.
    heap_free, 2, |env, [h, off]| crate::js::heap::heap_free(id(h)?, off).map(|()| Ret::Undefined)
);
number_callback!(
    /// `heapFreeNamed(id, offset, entry)`.
    heap_free_named, 3, |env, [h, off, entry]| crate::js::heap::heap_free_named(id(h)?, off, entry).map(|()| Ret::Undefined)
);
number_callback!(
    /// `heapRealloc(id, offset, size)`.
    heap_realloc, 3, |env, [h, off, size]| crate::js::heap::heap_realloc(id(h)?, off, size).map(Ret::Number)
);
number_callback!(
    /// `lockAcquire(id, offset, timeout)`, `timeout` < 0: no deadline.
    lock_acquire, 3, |env, [m, off, timeout]| {
        let js = Env::from_raw(env);
        let timeout = (timeout >= 0.0 || timeout.is_nan()).then_some(timeout);
        crate::js::lock::lock_acquire(&js, id(m)?, off, timeout).map(|c| Ret::Number(f64::from(c)))
    }
);
number_callback!(
    /// `condNotify(id, offset, lockId, lockOffset, n)`: how many waiters it woke.
    cond_notify, 5, |env, [m, off, lm, loff, n]| {
        crate::js::condition::cond_notify(id(m)?, off, id(lm)?, loff, id(n)?).map(|w| Ret::Number(f64::from(w)))
    }
);
number_callback!(
    /// `lockWake(id, offset, handOff)`: `handOff` 1 leaves the lock to the sleeper it wakes.
    lock_wake, 3, |env, [m, off, hand_off]| crate::js::lock::lock_wake(id(m)?, off, hand_off == 1.0).map(|()| Ret::Undefined)
);
number_callback!(
    /// `semWake(id, offset, n, handOff)`: `handOff` 1 after a release added its `n` units to
    /// the record's `handed` (they go back to the count if fewer sleepers woke).
    sem_wake, 4, |env, [m, off, n, hand_off]| crate::js::semaphore::sem_wake(id(m)?, off, id(n)?, hand_off == 1.0).map(|()| Ret::Undefined)
);
number_callback!(
    /// `semUndo(id, offset, op, n)`.
    sem_undo, 4, |env, [m, off, op, n]| crate::js::semaphore::sem_undo(id(m)?, off, id(op)?, id(n)?).map(Ret::Number)
);
number_callback!(
    /// `heapAllocInto(id, size, align, slot)`.
    heap_alloc_into, 4, |env, [h, size, align, at]| crate::js::blocks::heap_alloc_into(id(h)?, size, align, at).map(Ret::Number)
);
number_callback!(
    /// `heapFreeFrom(id, slot, next)`.
    heap_free_from, 3, |env, [h, at, next]| crate::js::blocks::heap_free_from(id(h)?, at, next).map(Ret::Number)
);
number_callback!(
    /// `mappingBuffer(id, offset, length)`: an ArrayBuffer over the mapping; see
    /// `js/mapping.rs` `buffer`.
    mapping_buffer, 3, |env, [m, off, len]| crate::js::mapping::buffer(env, id(m)?, off, len).map(Ret::Value)
);
number_callback!(
    /// `mappingRelease(id)`: the mapping object was collected.
    mapping_release, 1, |env, [m]| id(m).map(|m| {
        crate::js::mapping::release(m);
        Ret::Undefined
    })
);
number_callback!(
    /// `wordWake(id, offset, n)`.
    word_wake, 3, |env, [m, off, n]| crate::js::word::word_wake(id(m)?, off, id(n)?).map(|w| Ret::Number(w.into()))
);

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

const FAST: [(&CStr, Callback); 20] = [
    (c"heapMalloc", heap_malloc),
    (c"heapFree", heap_free),
    (c"heapFreeNamed", heap_free_named),
    (c"heapRealloc", heap_realloc),
    (c"lockAcquire", lock_acquire),
    (c"lockWake", lock_wake),
    (c"condNotify", cond_notify),
    (c"semWake", sem_wake),
    (c"segmentOpen", segment_open),
    (c"segmentCreate", segment_create),
    (c"mapRaw", map_raw_cb),
    (c"mappingClose", mapping_close),
    (c"anonymousCreate", anonymous_create),
    (c"mappingFromFd", mapping_from_fd),
    (c"semUndo", sem_undo),
    (c"heapAllocInto", heap_alloc_into),
    (c"heapFreeFrom", heap_free_from),
    (c"wordWake", word_wake),
    (c"mappingBuffer", mapping_buffer),
    (c"mappingRelease", mapping_release),
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
