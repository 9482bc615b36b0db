//! Rebuilds when the build-time settings of src/config.rs change.
fn main() {
    println!("cargo:rerun-if-env-changed=GRAPES");
    println!("cargo:rerun-if-env-changed=WORKER_PORT");
}
