//! The build script of both QEMU boards (their Cargo.toml: `build = "../qemu-common/build.rs"`;
//! cargo runs it in the board's directory): puts the board's memory.x where the runtime's
//! link.x (cortex-m-rt, riscv-rt) looks for it.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let _ = fs::copy("memory.x", out.join("memory.x"));
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    // Ports baked into the image (see src/main.rs); CI picks free ones.
    println!("cargo:rerun-if-env-changed=GRAPE_DHT_PORT");
    println!("cargo:rerun-if-env-changed=WORKER_PORT");
}
