//! Running external tools (`ip`, `vtysh`, `birdc`, `gobgp`, …) with errors that say
//! what the runner was doing, the command line and the tool's own message.

use std::process::{Command, Output, Stdio};

use crate::error::{LabError, Result};

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing its output; a spawn failure or a non-zero exit
/// becomes [`LabError::Command`] with `context` and the tool's stderr.
pub(crate) fn run(context: impl Into<String>, cmd: &mut Command) -> Result<String> {
    let out = output(context, cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`] but returns the whole [`Output`] on success.
pub(crate) fn output(context: impl Into<String>, cmd: &mut Command) -> Result<Output> {
    let context = context.into();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            context: context.clone(),
            command: describe(cmd),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            context,
            command: describe(cmd),
            detail: failure_detail(&out),
        });
    }
    Ok(out)
}

/// The most useful text of a failed command: its stderr, else stdout, plus the status.
pub(crate) fn failure_detail(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let text = if err.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        err.into_owned()
    };
    format!("{} ({})", text.trim(), out.status)
}
