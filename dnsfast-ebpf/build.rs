//! Rebuild the program when `bpf-linker` changes: cargo does not know rustc links BPF objects
//! with it (the same approach as aya-template).
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask setup`"),
    }
}
