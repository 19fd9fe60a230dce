//! # tortie-ctl: the `tortiectl` command
//!
//! A calicoctl-like client for the tortie datastore. The binary is a thin wrapper around
//! [`run`], which takes its arguments and standard streams as parameters so that tests can drive
//! it in-process.
//!
//! Exit status: 0 success, 1 a runtime failure (bad document, datastore refused, not found),
//! 2 a usage error (unknown kind, bad flag), as with kubectl.

pub mod cli;
pub mod commands;
pub mod input;
pub mod output;
pub mod table;

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command};

/// Exit status of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit status when something failed at run time.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a usage error.
pub const EXIT_USAGE: i32 = 2;

/// The standard streams a run uses.
pub struct Io<'a> {
    /// Input for `-f -`.
    pub stdin: &'a mut dyn Read,
    /// Results.
    pub stdout: &'a mut dyn Write,
    /// Errors and warnings.
    pub stderr: &'a mut dyn Write,
}

/// A failure that ends the command.
#[derive(Debug)]
pub struct CtlError {
    /// Exit status.
    pub code: i32,
    /// What to print after `error: ` (nothing when empty: already reported).
    pub message: String,
}

impl CtlError {
    /// A runtime failure (exit 1).
    pub fn failure(message: impl fmt::Display) -> Self {
        CtlError {
            code: EXIT_FAILURE,
            message: message.to_string(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        CtlError {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// A failure whose details were already printed.
    pub fn reported() -> Self {
        CtlError {
            code: EXIT_FAILURE,
            message: String::new(),
        }
    }
}

impl From<std::io::Error> for CtlError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`tortiectl get … | head`): nothing more to say.
            CtlError::reported()
        } else {
            CtlError::failure(format!("cannot write output: {e}"))
        }
    }
}

/// State shared by the commands of one run.
pub struct Ctx<'a> {
    /// Standard streams.
    pub io: Io<'a>,
    /// The datastore URL (flag, environment or default).
    pub datastore_url: String,
    failed: bool,
}

impl<'a> Ctx<'a> {
    /// A context for one run.
    pub fn new(io: Io<'a>, datastore_url: String) -> Self {
        Ctx {
            io,
            datastore_url,
            failed: false,
        }
    }

    /// Reports an error and carries on; the run will exit with status 1.
    pub fn error(&mut self, message: impl fmt::Display) {
        let _ = writeln!(self.io.stderr, "error: {message}");
        self.failed = true;
    }

    /// Reports a warning.
    pub fn warn(&mut self, message: impl fmt::Display) {
        let _ = writeln!(self.io.stderr, "warning: {message}");
    }

    /// Writes a line of results.
    pub fn out(&mut self, line: impl fmt::Display) -> Result<(), CtlError> {
        writeln!(self.io.stdout, "{line}")?;
        Ok(())
    }

    /// True once an error has been reported.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Opens the datastore, creating an embedded one if needed (for commands that write).
    pub async fn datastore(&self) -> Result<tortie_datastore::Datastore, CtlError> {
        tortie_datastore::Datastore::open(&self.datastore_url)
            .await
            .map_err(|e| CtlError::failure(format!("cannot open the datastore: {e}")))
    }

    /// Opens an existing datastore (for commands that read or change existing objects).
    pub async fn existing_datastore(&self) -> Result<tortie_datastore::Datastore, CtlError> {
        tortie_datastore::Datastore::open_existing(&self.datastore_url)
            .await
            .map_err(|e| CtlError::failure(format!("cannot open the datastore: {e}")))
    }
}

/// Runs `tortiectl` with `args` (including the program name) and returns the exit status.
pub async fn run<I, T>(args: I, io: Io<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = write!(io.stdout, "{text}");
                    EXIT_OK
                }
                _ => {
                    let _ = write!(io.stderr, "{text}");
                    EXIT_USAGE
                }
            };
        }
    };
    let mut ctx = Ctx::new(io, cli.datastore.clone());
    let result = dispatch(&mut ctx, cli.command).await;
    let _ = ctx.io.stdout.flush();
    match result {
        Err(e) => {
            if !e.message.is_empty() {
                let _ = writeln!(ctx.io.stderr, "error: {}", e.message);
            }
            e.code
        }
        Ok(()) if ctx.failed() => EXIT_FAILURE,
        Ok(()) => EXIT_OK,
    }
}

async fn dispatch(ctx: &mut Ctx<'_>, command: Command) -> Result<(), CtlError> {
    use commands::write::Mode;
    match command {
        Command::Apply(a) => commands::write::run(ctx, Mode::Apply, &a).await,
        Command::Create(a) => commands::write::run(ctx, Mode::Create, &a).await,
        Command::Replace(a) => commands::write::run(ctx, Mode::Replace, &a).await,
        Command::Get(a) => commands::get::run(ctx, &a).await,
        Command::Delete(a) => commands::delete::run(ctx, &a).await,
        Command::Label(a) => commands::label::run(ctx, &a).await,
        Command::Patch(a) => commands::patch::run(ctx, &a).await,
        Command::Validate(a) => commands::validate::run(ctx, &a),
        Command::Version(a) => commands::version::run(ctx, &a).await,
        Command::Completion(a) => commands::completion::run(ctx, &a),
        Command::Ipam(a) => commands::ipam::run(ctx, &a).await,
        Command::Node(a) => commands::node::run(ctx, &a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_in_process(args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut input = stdin.as_bytes();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
        };
        let mut all = vec!["tortiectl"];
        all.extend_from_slice(args);
        let code = run(all, io).await;
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[tokio::test]
    async fn runs_in_process() {
        let good = "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16}\n";
        let (code, out, err) = run_in_process(&["validate", "-f", "-"], good).await;
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "1 resource valid\n", "")
        );

        let bad = good.replace("/16", "/33");
        let (code, out, err) = run_in_process(&["validate", "-f", "-"], &bad).await;
        assert_eq!(code, EXIT_FAILURE);
        assert!(out.is_empty());
        assert_eq!(
            err,
            "error: <stdin>: document 1 (IPPool \"p\"): spec.cidr: \"10.1.0.0/33\" is not a valid CIDR\n"
        );

        let (code, _, err) = run_in_process(&["get", "nosuchkind"], "").await;
        assert_eq!(code, EXIT_USAGE);
        assert!(err.contains("valid kinds"), "{err}");
        let (code, out, _) = run_in_process(&["--help"], "").await;
        assert_eq!(code, EXIT_OK);
        assert!(out.contains("Usage: tortiectl"), "{out}");
    }
}
