//! `ochat-bench`: the load tool. It mints its own tokens, creates the users it
//! needs, drives real WebSocket clients against one or more nodes, and
//! writes a JSON result file. See docs/benchmarks.md.

mod client;
mod group;
mod load;
mod procstat;
mod rest;
mod seed;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ochat-bench",
    about = "Load generator and benchmarks for ochat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Node base URLs, e.g. http://127.0.0.1:8081,http://127.0.0.1:8082.
    /// Senders use the first, receivers the last, so every message crosses nodes.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// The nodes' JWT_SECRET; the tool signs its own tokens.
    #[arg(long, env = "JWT_SECRET")]
    pub secret: String,
    /// Node process ids, for CPU and RSS in the report.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Client connections spread over 127.0.0.1..=127.0.0.N (one source
    /// address reaches only ~28k ephemeral ports).
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Where to write the JSON result.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Distinguishes this run's users from earlier runs'.
    #[arg(long, default_value = "bench")]
    pub tag: String,
    /// Percent of each sender's frames that change a message it sent (a
    /// reaction or an edit of its latest acked message) instead of sending
    /// one: 10 is one in ten. The rate counts both; delivery counts
    /// messages.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=50))]
    pub changes: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Step the send rate up; report the highest rate with 100% delivery and p99 <= 50 ms.
    Throughput {
        #[command(flatten)]
        common: Common,
        /// Rates (messages/s) to try, in order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,2000,5000,10000,20000"
        )]
        rates: Vec<u32>,
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// One fixed rate, reported in detail.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 5000)]
        rate: u32,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Fan-out to one group with members spread over all nodes; report the
    /// highest rate with 100% delivery to every member and p99 <= 100 ms.
    Group {
        #[command(flatten)]
        common: Common,
        /// Members, the owner included (at most MAX_GROUP_MEMBERS).
        #[arg(long, default_value_t = 50)]
        members: usize,
        /// Members that send (the rest only receive).
        #[arg(long, default_value_t = 5)]
        senders: usize,
        /// Messages/s into the group to try, in order.
        #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800")]
        rates: Vec<u32>,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Hold as many idle connections as possible on the first node; report
    /// RSS per connection as the slope from 1k to the maximum.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// How long to hold them before measuring.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// A connection storm: connects per second including auth.
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// First hold this many idle sessions of other users on the node,
        /// then close them all at once and start the storm right away: what
        /// the nodes that remain see when another fails over to them.
        #[arg(long, default_value_t = 0)]
        after_disconnect: usize,
    },
    /// Fill storage with messages among users, through the store itself.
    Seed {
        /// A postgres:// or sqlite:// URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// Conversations per user (messages go to a few partners, as in life).
        #[arg(long, default_value_t = 20)]
        partners: usize,
    },
    /// REST reads against seeded data: conversation page, list, search, stats.
    Rest {
        #[command(flatten)]
        common: Common,
        /// Users the seed created (reads pick among them).
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let report = match Cli::parse().command {
        Command::Throughput {
            common,
            rates,
            pairs,
            duration,
        } => {
            let out = common.out.clone();
            (
                load::throughput(&common, &rates, pairs, duration).await?,
                out,
            )
        }
        Command::Latency {
            common,
            rate,
            pairs,
            duration,
        } => {
            let out = common.out.clone();
            (
                load::throughput(&common, &[rate], pairs, duration).await?,
                out,
            )
        }
        Command::Group {
            common,
            members,
            senders,
            rates,
            duration,
        } => {
            let out = common.out.clone();
            (
                group::group(&common, members, senders, &rates, duration).await?,
                out,
            )
        }
        Command::Idle {
            common,
            connections,
            concurrency,
            hold,
        } => {
            let out = common.out.clone();
            (
                load::idle(&common, connections, concurrency, hold).await?,
                out,
            )
        }
        Command::Connect {
            common,
            connections,
            concurrency,
            after_disconnect,
        } => {
            let out = common.out.clone();
            (
                load::connect_storm(&common, connections, concurrency, after_disconnect).await?,
                out,
            )
        }
        Command::Seed {
            database_url,
            users,
            messages,
            partners,
        } => (
            seed::seed(&database_url, users, messages, partners).await?,
            None,
        ),
        Command::Rest {
            common,
            users,
            requests,
            concurrency,
        } => {
            let out = common.out.clone();
            (
                rest::rest(&common, users, requests, concurrency).await?,
                out,
            )
        }
    };
    let (report, out) = report;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(&path, text + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
