//! The `wxcourier` binary: everything happens in the library's `cli` module.

fn main() -> std::process::ExitCode {
    wxcourier::cli::main()
}
