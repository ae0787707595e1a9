//! `migroute-guest`: the KVM lab guest's agent (see `migroute_labs::guest_agent`).
//!
//! ```text
//! migroute-guest [--udp 7351] [--tcp 7352] [--control 7353] [--disk /dev/vda]
//!                [--bind ::] [--interval-ms 20] [--disk-wait-s 10]
//!                [--poweroff auto|halt|exit]
//! ```
//!
//! Prints `migroute-guest: listening …` and then `migroute-guest: ready` on stdout (the
//! guest's serial console). `--poweroff auto` (the default) powers the machine off only
//! when running from an initramfs; elsewhere `poweroff` makes the agent exit.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use migroute_labs::guest_agent::{in_initramfs, Agent, AgentConfig, PowerOff, READY_LINE};

const USAGE: &str = "usage: migroute-guest [--udp PORT] [--tcp PORT] [--control PORT] \
[--disk PATH] [--bind ADDR] [--interval-ms MS] [--disk-wait-s S] [--poweroff auto|halt|exit]";

fn parse(args: &[String]) -> Result<AgentConfig, String> {
    let mut cfg = AgentConfig::default();
    let mut power = "auto".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--udp" => cfg.udp_port = value.parse().map_err(|e| bad(&e))?,
            "--tcp" => cfg.tcp_port = value.parse().map_err(|e| bad(&e))?,
            "--control" => cfg.control_port = value.parse().map_err(|e| bad(&e))?,
            "--disk" => cfg.disk.path = value.into(),
            "--bind" => cfg.bind = value.parse::<IpAddr>().map_err(|e| bad(&e))?,
            "--interval-ms" => {
                cfg.disk.interval = Duration::from_millis(value.parse().map_err(|e| bad(&e))?)
            }
            "--disk-wait-s" => {
                cfg.disk.wait = Duration::from_secs(value.parse().map_err(|e| bad(&e))?)
            }
            "--poweroff" => power = value.clone(),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    cfg.power_off = match power.as_str() {
        "halt" => PowerOff::Halt,
        "exit" => PowerOff::Exit,
        "auto" if in_initramfs() => PowerOff::Halt,
        "auto" => PowerOff::Exit,
        other => return Err(format!("--poweroff {other}: auto, halt or exit")),
    };
    Ok(cfg)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let power = cfg.power_off;
    let agent = match Agent::start(cfg) {
        Ok(a) => a,
        Err(e) => {
            println!("migroute-guest: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "migroute-guest: listening udp={} tcp={} control={} poweroff={power:?}",
        agent.udp_addr, agent.tcp_addr, agent.control_addr
    );
    println!("{READY_LINE}");
    agent.wait();
    println!("migroute-guest: exiting on poweroff");
    ExitCode::SUCCESS
}
