//! macOS backend: lands with the distribution work (issue 7).
compile_error!("the macOS backend is not written yet");
