//! The `sai` binary: everything lives in the library; see `sai::cli`.

fn main() -> std::process::ExitCode {
    sai::cli::run()
}
