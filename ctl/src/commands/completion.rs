//! `completion SHELL`.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs};
use crate::{CtlError, Ctx};

/// Prints the completion script for a shell.
pub fn run(ctx: &mut Ctx<'_>, args: &CompletionArgs) -> Result<(), CtlError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "tortiectl", &mut script);
    ctx.io.stdout.write_all(&script)?;
    Ok(())
}
