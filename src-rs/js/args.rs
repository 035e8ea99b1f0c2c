//! Argument checks shared by every file of the boundary: JavaScript numbers to offsets,
//! sizes and ids, and timeouts to deadlines. Each throws a `TypeError`/`RangeError`
//! naming the argument.

use crate::error::{Result, ShmError};
use crate::sys::Deadline;

/// The largest integer a JS number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// Checks a JS number is a non-negative safe integer.
pub(crate) fn to_u64(what: &str, v: f64) -> Result<u64> {
    if !v.is_finite() || v.fract() != 0.0 {
        return Err(ShmError::type_error(format!(
            "The \"{what}\" argument must be an integer; got {v}"
        )));
    }
    if !(0.0..=MAX_SAFE).contains(&v) {
        return Err(ShmError::range(format!(
            "The \"{what}\" argument must be >= 0 and <= 2^53-1; got {v}"
        )));
    }
    Ok(v as u64)
}

/// [`to_u64`] as a `usize` (offsets and sizes inside a mapping).
pub(crate) fn to_usize(what: &str, v: f64) -> Result<usize> {
    Ok(to_u64(what, v)? as usize)
}

/// A slot or mapping id.
pub(crate) fn id(v: f64) -> Result<u32> {
    if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ShmError::type_error(format!("bad id {v}")))
    }
}

/// A deadline from a timeout in milliseconds; `None` = forever.
pub(crate) fn deadline(timeout_ms: Option<f64>) -> Result<Option<Deadline>> {
    match timeout_ms {
        None => Ok(None),
        Some(t) if t == f64::INFINITY => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(ShmError::range(format!(
            "The \"timeout\" option must be a non-negative number of milliseconds; got {t}"
        ))),
        Some(t) => Ok(Some(Deadline::after_ms(t))),
    }
}
