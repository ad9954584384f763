//! The `council-bridge` binary: all the work happens in the library; see `cli`.
//!
//! The allocator is mimalloc: a file's records are many small short-lived values (a map and
//! strings per record, headers, bodies), made on the reading thread and freed on the chunk
//! writer's; with the system allocator, `malloc`/`free` took about a sixth of the processing
//! time, and a file went from 36,800 to 48,700 records/s file → store with mimalloc
//! (docs/benchmarks.md).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    council_bridge::cli::main()
}
