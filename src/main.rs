//! The `wxcourier` binary: everything happens in the library's `cli` module.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    wxcourier::cli::main()
}
