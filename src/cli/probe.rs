//! `migroute probe send|recv`: the lab's traffic probe (open-loop UDP stream or TCP
//! liveness connection). The logic is `migroute_labs::probe`; reports go to stdout as
//! JSON.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use migroute_labs::probe::{tcp, udp, DEFAULT_PORT};

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Send a UDP stream (or run the TCP client) to a receiver.
    Send {
        /// Receiver address, e.g. `10.10.0.5:7331` or `[2001:db8:10::5]:7331`.
        #[arg(long)]
        to: SocketAddr,
        /// TCP liveness mode instead of the UDP stream.
        #[arg(long)]
        tcp: bool,
        /// UDP packets per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// UDP datagram size in bytes (at least 48).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// TCP: milliseconds between messages.
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        /// TCP: seconds without progress before the connection counts as dead.
        #[arg(long, default_value_t = 30)]
        stall_limit: u64,
    },
    /// Receive one UDP run (or serve one TCP client) and print the report.
    Recv {
        /// Address to listen on (`[::]` also receives IPv4).
        #[arg(long, default_value_t = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_PORT)))]
        listen: SocketAddr,
        #[arg(long)]
        tcp: bool,
        /// Seconds to wait for the first packet (or the TCP client).
        #[arg(long, default_value_t = 30)]
        first_timeout: u64,
        /// Seconds of silence after which the run is over (must exceed any outage
        /// you want to measure).
        #[arg(long, default_value_t = 10)]
        idle_timeout: u64,
    },
}

fn print<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    // A closed pipe (`| head`) must not turn a finished run into a crash.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(value)?
    );
    Ok(())
}

pub fn run(cmd: ProbeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProbeCommand::Send {
            to,
            tcp: false,
            rate,
            duration,
            size,
            ..
        } => {
            let cfg = udp::SendConfig {
                target: to,
                rate_pps: rate,
                duration: Duration::from_secs_f64(duration),
                size,
            };
            print(&udp::send(&cfg).with_context(|| format!("probe send to {to}"))?)?;
            Ok(ExitCode::SUCCESS)
        }
        ProbeCommand::Send {
            to,
            tcp: true,
            duration,
            interval_ms,
            stall_limit,
            ..
        } => {
            let mut cfg = tcp::TcpConfig::new(to, Duration::from_secs_f64(duration));
            cfg.interval = Duration::from_millis(interval_ms.max(1));
            cfg.stall_limit = Duration::from_secs(stall_limit);
            let report = tcp::run_client(&cfg);
            print(&report)?;
            Ok(if report.survived {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        ProbeCommand::Recv {
            listen,
            tcp: false,
            first_timeout,
            idle_timeout,
        } => {
            let rx = udp::Receiver::bind(listen).with_context(|| format!("bind {listen}"))?;
            let opts = udp::RecvOptions {
                first_packet_timeout: Duration::from_secs(first_timeout),
                idle_timeout: Duration::from_secs(idle_timeout),
            };
            let report = rx.run(opts).context("probe receive")?;
            print(&report)?;
            Ok(if report.lost == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        ProbeCommand::Recv {
            listen,
            tcp: true,
            first_timeout,
            idle_timeout,
        } => {
            let server = tcp::EchoServer::bind(listen).with_context(|| format!("bind {listen}"))?;
            let report = server
                .run(
                    Duration::from_secs(first_timeout),
                    Duration::from_secs(idle_timeout),
                )
                .context("probe echo server")?;
            print(&report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
