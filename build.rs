//! With the `cuda-offline` feature: links stand-ins for the LLVM C API and cubecl's LLVM shims. burn-cuda's kernel
//! compiler links cubecl-llvm, whose native part (an LLVM bundle) is downloaded at build time; built with
//! `DOCS_RS=1` that download is skipped, and chexlab compiles kernels through NVRTC (cubecl's `cpp` path), which
//! never calls LLVM. Each stand-in aborts with a message should it ever be called. The symbol list is
//! `launch/cuda-offline/llvm-symbols.txt` (`launch/build-cuda.sh` refreshes it from the linker's complaints).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-offline")]
    llvm_stubs();
}

#[cfg(feature = "cuda-offline")]
fn llvm_stubs() {
    use std::fmt::Write as _;
    let list = "launch/cuda-offline/llvm-symbols.txt";
    println!("cargo::rerun-if-changed={list}");
    let text = std::fs::read_to_string(list).unwrap_or_else(|e| panic!("{list}: {e}"));
    let mut c = String::from(
        "#include <stdio.h>\n#include <stdlib.h>\n\
         static void chexlab_llvm_stub(const char *name) {\n\
         \tfprintf(stderr, \"chexlab: %s was called, but this CUDA build compiles kernels with NVRTC and links no \
         LLVM (launch/build-cuda.sh)\\n\", name);\n\tabort();\n}\n",
    );
    for sym in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            sym.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{list}: '{sym}' is not a C symbol"
        );
        writeln!(c, "void {sym}(void) {{ chexlab_llvm_stub(\"{sym}\"); }}").unwrap();
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("llvm_stubs.c");
    std::fs::write(&out, c).unwrap();
    // Whole archive: the stand-ins must resolve references from crates linked after chexlab's own objects.
    cc::Build::new()
        .file(&out)
        .warnings(false)
        .link_lib_modifier("+whole-archive")
        .compile("chexlab_llvm_stubs");
}
