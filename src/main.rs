//! The `wxcourier` binary: everything happens in the library's `cli` module.

#![forbid(unsafe_code)]

/// jemalloc, not glibc malloc, which took a fifth of the worker's CPU and waited on its arena
/// locks (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    wxcourier::cli::main()
}
