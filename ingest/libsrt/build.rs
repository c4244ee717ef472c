// Links the system libsrt (Debian: libsrt-openssl-dev). pkg-config is not required: Debian
// installs libsrt.so in the default library path and srt.h under /usr/include/srt.
fn main() {
    cc::Build::new()
        .file("csrc/stats.c")
        .warnings(true)
        .compile("fc_srt_stats");
    println!("cargo:rustc-link-lib=dylib=srt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/stats.c");
}
