//! `migroute bgp speak`: a standalone BGP speaker driven by text commands on stdin,
//! printing one JSON line per event on stdout. Parsing of the command lines and of the
//! TOML config is in `migroute_bgp::{text_api, config}`; this file wires stdin,
//! stdout and signals to a `Speaker`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use migroute_bgp::codec::Family;
use migroute_bgp::text_api::{self, Command};
use migroute_bgp::{PeerConfig, Speaker, SpeakerConfig, SpeakerEvent};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// Arguments of `migroute bgp speak`.
#[derive(Debug, Args)]
pub struct SpeakArgs {
    /// TOML file with the same settings (flags below are then optional and override).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Our AS number.
    #[arg(long, value_name = "N")]
    local_as: Option<u32>,
    /// Our BGP identifier.
    #[arg(long, value_name = "A")]
    router_id: Option<Ipv4Addr>,
    /// A neighbor, ADDR or ADDR:PORT ([V6]:PORT); repeat for more.
    #[arg(long, value_name = "ADDR[:PORT]")]
    peer: Vec<String>,
    /// The neighbor's AS, one per --peer in order (a single value applies to all).
    #[arg(long, value_name = "N")]
    peer_as: Vec<u32>,
    /// Accept connections on this address (e.g. 0.0.0.0:179); default: connect only.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Source address for the --peer sessions (also the next hop by default).
    #[arg(long, value_name = "A")]
    local_address: Option<IpAddr>,
    /// TCP-MD5 password for every --peer, read from this file (trailing newline cut).
    #[arg(long, value_name = "F")]
    md5_password_file: Option<PathBuf>,
    /// Persist announced routes here; after a restart they are re-advertised before
    /// End-of-RIB, so graceful-restart peers never withdraw them.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Proposed hold time in seconds.
    #[arg(long, value_name = "S")]
    hold_time: Option<u16>,
    /// Families for the --peer sessions: ipv4, ipv6 or ipv4,ipv6.
    #[arg(long, value_name = "LIST", default_value = "ipv4,ipv6")]
    families: String,
    /// Only accept connections from the --peer neighbors, never connect.
    #[arg(long)]
    passive: bool,
    /// Print session events only, not one line per received or withdrawn route
    /// (for full tables; `show routes` still lists them).
    #[arg(long)]
    no_route_events: bool,
}

fn parse_peer(s: &str) -> anyhow::Result<(IpAddr, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--peer {s:?} is not ADDR or ADDR:PORT"))?;
    Ok((ip, None))
}

fn families(s: &str) -> anyhow::Result<Vec<Family>> {
    s.split(',')
        .filter(|w| !w.is_empty())
        .map(|w| match w.trim() {
            "ipv4" | "ipv4_unicast" => Ok(Family::Ipv4Unicast),
            "ipv6" | "ipv6_unicast" => Ok(Family::Ipv6Unicast),
            other => bail!("unknown family {other:?} (ipv4, ipv6)"),
        })
        .collect()
}

impl SpeakArgs {
    fn build(&self) -> anyhow::Result<SpeakerConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                SpeakerConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => {
                let (Some(asn), Some(id)) = (self.local_as, self.router_id) else {
                    bail!("--local-as and --router-id are required without --config");
                };
                SpeakerConfig::new(asn, id)
            }
        };
        if let Some(a) = self.local_as {
            cfg.local_as = a;
        }
        if let Some(id) = self.router_id {
            cfg.router_id = id;
        }
        if self.listen.is_some() {
            cfg.listen = self.listen;
        }
        if self.state_dir.is_some() {
            cfg.state_dir = self.state_dir.clone();
        }
        if let Some(h) = self.hold_time {
            cfg.hold_time = h;
        }
        let password = match &self.md5_password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        if !self.peer.is_empty() && self.peer_as.len() != self.peer.len() && self.peer_as.len() != 1
        {
            bail!("give one --peer-as per --peer, or a single one for all");
        }
        let fams = families(&self.families)?;
        for (i, p) in self.peer.iter().enumerate() {
            let (addr, port) = parse_peer(p)?;
            let asn = self.peer_as[i.min(self.peer_as.len() - 1)];
            let mut pc = PeerConfig::new(addr, asn);
            if let Some(port) = port {
                pc.port = port;
            }
            pc.local_address = self.local_address;
            pc.md5_password = password.clone();
            pc.families = fams.clone();
            pc.passive = self.passive;
            cfg.peers.push(pc);
        }
        if cfg.peers.is_empty() {
            bail!("no peers: give --peer ADDR --peer-as N, or [[peer]] in --config");
        }
        Ok(cfg)
    }
}

fn print(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub fn run(args: SpeakArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.build()?;
    let route_events = !args.no_route_events;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(speak(cfg, route_events))
}

async fn speak(cfg: SpeakerConfig, route_events: bool) -> anyhow::Result<ExitCode> {
    let (speaker, mut events, join) = Speaker::start_subscribed(cfg).await?;
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(SpeakerEvent::RoutesReceived { .. } | SpeakerEvent::RoutesWithdrawn { .. })
                    if !route_events => {}
                Ok(e) => text_api::event_lines(&e).iter().for_each(print),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    print(&json!({"event": "events_lost", "count": n}))
                }
                Err(_) => return,
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let reason = loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => {
                let line = match line {
                    Ok(Some(l)) => l,
                    // Without stdin the speaker keeps its routes and runs until a signal.
                    Ok(None) | Err(_) => { stdin_open = false; continue; }
                };
                match text_api::parse(&line) {
                    Ok(None) => {}
                    Ok(Some(Command::Shutdown(msg))) => {
                        break if msg.is_empty() { "migroute bgp speak: shutdown".to_string() } else { msg };
                    }
                    Ok(Some(cmd)) => {
                        let r = execute(&speaker, cmd).await;
                        match r {
                            Ok(()) => print(&json!({"event": "command", "ok": true, "command": line.trim()})),
                            Err(e) => print(&json!({"event": "command", "ok": false, "command": line.trim(), "error": format!("{e:#}")})),
                        }
                    }
                    Err(e) => print(&json!({"event": "command", "ok": false, "command": line.trim(), "error": e})),
                }
            }
            _ = tokio::signal::ctrl_c() => break "migroute bgp speak: interrupted".to_string(),
            _ = sigterm.recv() => break "migroute bgp speak: terminated".to_string(),
        }
    };
    speaker.shutdown(&reason).await;
    let _ = join.await;
    printer.abort();
    Ok(ExitCode::SUCCESS)
}

async fn execute(speaker: &Speaker, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Announce(p, a) => speaker.announce(p, a).await?,
        Command::Withdraw(p) => speaker.withdraw(p).await?,
        Command::ShowPeers => print(&json!({"peers": speaker.peers()})),
        Command::ShowRoutes => {
            let announced: Vec<_> = speaker
                .routes()
                .into_iter()
                .map(|(p, a)| json!({"prefix": p, "attributes": a}))
                .collect();
            let mut received = serde_json::Map::new();
            for st in speaker.peers() {
                let routes = speaker.received(st.address).await?;
                received.insert(st.address.to_string(), json!(routes));
            }
            print(&json!({"announced": announced, "received": received}));
        }
        Command::Shutdown(_) => {}
    }
    Ok(())
}
