//! Refuse every target but the one rawthread is written for, with a message
//! that says why. (The crate uses no cfgs of its own to declare.)

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=asm/x86_64.s");

    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if (arch.as_str(), os.as_str(), env.as_str()) != ("x86_64", "linux", "gnu") {
        println!(
            "cargo::error=rawthread supports only x86_64 Linux with glibc \
             (target arch={arch}, os={os}, env={env}). It builds each thread's \
             TLS and glibc thread control block by hand, which depends on \
             glibc's x86_64 layout; musl hides the state this needs, and other \
             architectures need their own clone trampoline in asm/."
        );
    }
}
