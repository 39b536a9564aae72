//! `shoal`: the single binary. Parses the command line and hands each subcommand to its
//! module under `cli/`; every piece of domain logic lives in the library crates.

mod cli;
mod heap;

use clap::Parser;

/// mimalloc rather than the system allocator: a hollow-node agent frees the runners of
/// thousands of tasks at once, and glibc's allocator kept that peak resident (heap profile:
/// the peak was eight times the live heap); mimalloc returns freed pages and is faster on
/// the controller's many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages are turned off for the servers ([`is_server_without_host_processes`]):
/// where the kernel grants them a touched 4 KiB page costs 2 MiB (14 of an idle hollow-node
/// agent's 16 MiB of anonymous memory were huge pages); Shoal's servers keep small,
/// scattered heaps that gain nothing from them. It is done first thing in `main`, before its
/// own allocations, and undone for every other command. mimalloc is built without asking for
/// them (its `no_thp` feature): it advised huge pages on the arenas it reserves, so where the
/// kernel grants them only on request (`madvise`, the usual mode) the allocations made before
/// `main` got one, and an agent running host processes, which keeps the setting it found, one
/// per 2 MiB of heap it touched.
fn main() -> std::process::ExitCode {
    let found = nix::sys::prctl::get_thp_disable();
    let huge_pages_off = nix::sys::prctl::set_thp_disable(true);
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    if let Err(e) = huge_pages_off {
        tracing::debug!(error = %e, "cannot turn transparent huge pages off");
    } else if !is_server_without_host_processes(&args.command) {
        // As the process found it, for the processes it starts.
        let restored = found.and_then(nix::sys::prctl::set_thp_disable);
        if let Err(e) = restored {
            tracing::warn!(error = %e, "cannot turn transparent huge pages back on");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(heap::collect_when_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // On a worker, not on this thread: only workers collect their heap when idle.
    match runtime.block_on(runtime.spawn(cli::run(args.command))) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The controller, the API server and an agent whose tasks are not host processes: the
/// servers that may turn huge pages off (the setting is inherited across `fork` and
/// `execve`, so a process-runtime agent's tasks, and `shoal dev`'s, would start with it).
fn is_server_without_host_processes(command: &cli::Command) -> bool {
    match command {
        cli::Command::Controller(_) | cli::Command::Api(_) => true,
        cli::Command::Agent(a) => a.runtime != shoal_agent::RuntimeChoice::Process,
        _ => false,
    }
}
