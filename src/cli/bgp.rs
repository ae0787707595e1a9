//! `migroute bgp …`: decode and encode BGP messages. The work is in
//! `migroute_bgp::tool`; this file only parses arguments and does the IO.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use migroute_bgp::tool;

#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    /// Read BGP messages from stdin and print one JSON object per message.
    ///
    /// Exits 1 if any message is broken (its NOTIFICATION is printed as
    /// {"error": {"notification": [CODE, SUBCODE], "reason": …}}).
    Decode(CodecArgs),
    /// Read JSON messages (as printed by `decode`) from stdin and write their bytes.
    Encode(CodecArgs),
    /// Run a BGP speaker: commands on stdin (announce, withdraw, show peers, show
    /// routes, shutdown), one JSON line per event on stdout.
    Speak(super::bgp_speak::SpeakArgs),
}

/// Session context and input/output format shared by both directions.
#[derive(Debug, Args)]
pub struct CodecArgs {
    /// Bytes are hex text (whitespace ignored) instead of raw binary.
    #[arg(long)]
    hex: bool,
    /// 4-octet AS session (the default).
    #[arg(long, overrides_with = "no_as4")]
    as4: bool,
    /// 2-octet AS session: AS_PATH and AGGREGATOR carry 2-octet ASNs.
    #[arg(long, overrides_with = "as4")]
    no_as4: bool,
    /// Families whose NLRI carry add-path identifiers, e.g. `ipv4,ipv6`.
    #[arg(long, value_name = "FAMILIES", default_value = "")]
    addpath: String,
}

impl CodecArgs {
    fn context(&self) -> anyhow::Result<migroute_bgp::codec::SessionContext> {
        let add_path = tool::parse_add_path(&self.addpath)?;
        Ok(tool::tool_context(!self.no_as4, add_path))
    }
}

pub fn run(cmd: BgpCommand) -> anyhow::Result<ExitCode> {
    if let BgpCommand::Speak(args) = cmd {
        return super::bgp_speak::run(args);
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let mut stdout = std::io::stdout().lock();
    match cmd {
        BgpCommand::Decode(args) => {
            let ctx = args.context()?;
            let bytes = tool::read_input(&input, args.hex)?;
            let report = tool::decode_stream(&bytes, &ctx);
            for obj in &report.objects {
                writeln!(stdout, "{obj}")?;
            }
            Ok(if report.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        BgpCommand::Encode(args) => {
            let ctx = args.context()?;
            let text = String::from_utf8(input).context("stdin is not UTF-8 JSON")?;
            let bytes = tool::encode_stream(&text, &ctx)?;
            if args.hex {
                writeln!(stdout, "{}", migroute_bgp::codec::to_hex(&bytes))?;
            } else {
                stdout.write_all(&bytes)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BgpCommand::Speak(_) => unreachable!("handled before reading stdin"),
    }
}
