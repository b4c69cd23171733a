use clap::Parser;
use roomcast::config::{Cli, Command, Settings};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before any thread starts (arenas are made per thread).
    roomcast::media::heap::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roomcast: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => match Settings::resolve(&args) {
            Ok(settings) => {
                roomcast::server::init_logging(settings.log_format);
                runtime.block_on(roomcast::server::serve(settings))
            }
            Err(e) => Err(e.into()),
        },
        Command::Loadgen(args) => {
            roomcast::server::init_logging(roomcast::config::LogFormat::Text);
            runtime.block_on(roomcast::loadgen::run(*args))
        }
    };
    // Blocking tasks still running (a webhook post to a receiver that
    // hangs, a teardown thread) do not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
