//! `migroute`: the command-line entry point.
//!
//! Thin by design: it parses the command line, sets up logging and hands off to the
//! crates. Protocol logic lives in `migroute-bgp`, `migroute-tunnel`,
//! `migroute-orchestration` and `migroute-labs`.

mod agent;
mod api;
mod cli;
mod config;
mod libvirt_hook;
mod orchestrator;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.log_format);
    match cli::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("migroute: error: {}", describe(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Typed errors often show their source in their
/// own message already (`{path}: {source}`); a cause the line already ends with is not
/// repeated.
fn describe(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.ends_with(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;
    use anyhow::Context;

    #[derive(Debug, thiserror::Error)]
    #[error("/etc/x.toml: {source}")]
    struct Read {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(Read { source: io });
        assert_eq!(describe(&err), "/etc/x.toml: no such file");
        let err = Err::<(), _>(err).context("loading the config").unwrap_err();
        assert_eq!(
            describe(&err),
            "loading the config: /etc/x.toml: no such file"
        );
        let err = anyhow::anyhow!("plain").context("outer");
        assert_eq!(describe(&err), "outer: plain");
    }
}
