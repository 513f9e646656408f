use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use ochat::{Application, Config};

// glibc's malloc showed up as a fifth of a node's CPU under connection
// storms (arena contention and consolidation); mimalloc is faster there and
// keeps idle connections' memory tighter.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ochat",
    version,
    about = "A horizontally scalable real-time chat backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print an HS256 access token signed with the configured secret.
    Token {
        /// The user's id (a UUID).
        #[arg(long)]
        sub: Uuid,
        #[arg(long)]
        email: String,
        /// Lifetime, like 1h, 30m or 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = dotenvy::dotenv();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ochat: {e}");
            return ExitCode::from(2);
        }
    };
    ochat::telemetry::init(config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => ochat::store::open(&config)
            .await
            .map(|_| eprintln!("migrations applied")),
        Command::Token { sub, email, ttl } => token(&config, sub, &email, ttl),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ochat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}

fn token(config: &Config, sub: Uuid, email: &str, ttl: Duration) -> anyhow::Result<()> {
    let secret = ochat::app::signing_secret(config)?.ok_or_else(|| {
        anyhow::anyhow!(
            "ochat token needs JWT_SECRET (tokens from a JWKS issuer come from that issuer)"
        )
    })?;
    println!("{}", ochat::auth::mint(&secret, sub, email, ttl));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
