//! `shoal`: the single binary. Parses the command line and hands each subcommand to its
//! module under `cli/`; every piece of domain logic lives in the library crates.

mod cli;

use clap::Parser;

/// mimalloc rather than the system allocator: a hollow-node agent frees the runners of
/// thousands of tasks at once, and glibc's allocator kept that peak resident (heap profile:
/// the peak was eight times the live heap); mimalloc returns freed pages and is faster on
/// the controller's many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
