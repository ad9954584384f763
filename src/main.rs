//! The `council-bridge` binary: all the work happens in the library; see `cli`.

fn main() -> std::process::ExitCode {
    council_bridge::cli::main()
}
