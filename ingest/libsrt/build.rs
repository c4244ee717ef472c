// Links the system libsrt (Debian: libsrt-openssl-dev). pkg-config is not required: Debian
// installs libsrt.so in the default library path.
fn main() {
    println!("cargo:rustc-link-lib=dylib=srt");
    println!("cargo:rerun-if-changed=build.rs");
}
