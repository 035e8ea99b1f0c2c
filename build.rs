fn main() {
    napi_build::setup();
    // The npm package's version, which the binary reports (`packageVersion`) so that the
    // JavaScript can refuse a binary of another release wherever it was put (a bundle has
    // no node_modules to ask). Cargo.toml's own version is not bumped by a release.
    println!("cargo:rerun-if-changed=package.json");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let json = std::fs::read_to_string(std::path::Path::new(&manifest).join("package.json"))
        .expect("package.json beside Cargo.toml");
    let version = json
        .split("\"version\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .expect("package.json has a \"version\"");
    println!("cargo:rustc-env=SHMUTILS_PACKAGE_VERSION={version}");
}
