//! The `chexlab` command line: parse and dispatch; the logic lives in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
