//! The `hookgate` binary: everything lives in the library; this only runs the command line.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookgate::cli::main()
}
