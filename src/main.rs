//! The `hookgate` binary: everything lives in the library; this only runs the command line.

#![forbid(unsafe_code)]

/// jemalloc gives a surge's memory back (see Cargo.toml for why not the system's allocator).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    hookgate::cli::main()
}
