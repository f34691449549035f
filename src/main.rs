use clap::Parser;
use std::process::ExitCode;
use tfe_node_agent::{app, app::Exit, cli::Cli, sys::logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    // One thread is plenty: the agent mostly waits on children and HTTP.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return Exit::Internal.into();
        }
    };
    runtime.block_on(app::run(cli)).into()
}
