//! The `sai` binary: everything lives in the library; see `sai::cli`.

// Under load, glibc's malloc took about a fifth of the server's CPU, much of it arena locks
// contended between the runtime threads and the writer thread that frees what they allocate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sai::cli::run()
}
