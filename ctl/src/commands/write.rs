//! `apply`, `create`, `replace`: every file is one atomic batch.

use tortie_datastore::{Change, Datastore, Outcome};

use crate::cli::WriteArgs;
use crate::input::{Checks, Decoded, Source, decode_source, read_sources};
use crate::output::{object_problem, object_ref};
use crate::{CtlError, Ctx};

/// Which write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create or update.
    Apply,
    /// Create only.
    Create,
    /// Update only.
    Replace,
}

impl Mode {
    fn change(self, d: &Decoded) -> Change {
        let r = d.resource.clone();
        match self {
            Mode::Apply => Change::Apply(r),
            Mode::Create => Change::Create(r),
            Mode::Replace => Change::Replace(r),
        }
    }

    fn verb(self, outcome: &Outcome) -> &'static str {
        match (self, outcome) {
            (_, Outcome::Created(_)) => "created",
            (Mode::Replace, Outcome::Updated(_)) => "replaced",
            (_, Outcome::Updated(_)) => "configured",
            (_, Outcome::Unchanged(_)) => "unchanged",
            (_, Outcome::Deleted(_)) => "deleted",
        }
    }
}

/// Runs `apply`/`create`/`replace`.
pub async fn run(ctx: &mut Ctx<'_>, mode: Mode, args: &WriteArgs) -> Result<(), CtlError> {
    let sources = read_sources(&args.files, ctx.io.stdin)?;
    let mut ds: Option<Datastore> = None;
    for source in &sources {
        let decoded = match decode_source(
            source,
            Checks {
                validate: true,
                refuse_internal: true,
            },
        ) {
            Ok(d) => d,
            Err(errors) => {
                for e in errors {
                    ctx.error(e);
                }
                ctx.error(format!(
                    "{}: nothing was written from this file",
                    source.name
                ));
                continue;
            }
        };
        let store = match &ds {
            Some(s) => s.clone(),
            None => ds.insert(ctx.datastore().await?).clone(),
        };
        write_file(ctx, &store, mode, source, &decoded).await?;
    }
    Ok(())
}

async fn write_file(
    ctx: &mut Ctx<'_>,
    ds: &Datastore,
    mode: Mode,
    source: &Source,
    decoded: &[Decoded],
) -> Result<(), CtlError> {
    let changes: Vec<Change> = decoded.iter().map(|d| mode.change(d)).collect();
    match ds.write_all(changes).await {
        Ok(outcomes) => {
            for o in &outcomes {
                let r = o.resource();
                ctx.out(format!(
                    "{} {}",
                    object_ref(r.kind(), &r.meta().name),
                    mode.verb(o)
                ))?;
            }
        }
        Err(e) => {
            match e.batch_index().and_then(|i| decoded.get(i)) {
                Some(d) => ctx.error(format!(
                    "{}: {}{}: {}",
                    source.name,
                    d.doc.label,
                    d.ident(),
                    object_problem(&e)
                )),
                None => ctx.error(format!("{}: {e}", source.name)),
            }
            ctx.error(format!(
                "{}: nothing was written from this file",
                source.name
            ));
        }
    }
    Ok(())
}
