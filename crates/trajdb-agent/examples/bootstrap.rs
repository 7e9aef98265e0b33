//! Runs `trajdb bootstrap` without the CLI binary: `cargo run --release --example bootstrap -- --method traj-bootstrap --train 200 --test 100`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: trajdb_agent::bootstrap::BootstrapArgs,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(trajdb_agent::bootstrap::main(&cli.args));
}
