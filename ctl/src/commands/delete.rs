//! `delete KIND NAME…` and `delete -f FILE`: each command line (or each file) is one atomic
//! batch.

use tortie_api::Kind;
use tortie_datastore::{Change, Datastore, Error};

use crate::cli::DeleteArgs;
use crate::input::{Checks, decode_source, read_sources};
use crate::output::{object_problem, object_ref};
use crate::{CtlError, Ctx};

/// One object to delete and where it was named.
struct Target {
    kind: Kind,
    name: String,
    /// `file: document N (Kind "name")` when it came from a file.
    origin: Option<String>,
}

/// Runs `delete`.
pub async fn run(ctx: &mut Ctx<'_>, args: &DeleteArgs) -> Result<(), CtlError> {
    if args.files.is_empty() {
        let kind = args
            .kind
            .ok_or_else(|| CtlError::usage("give KIND NAME… or -f FILE"))?;
        super::refuse_internal(kind)?;
        // A name given twice is deleted once.
        let mut names: Vec<&String> = Vec::new();
        for name in &args.names {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let targets = names
            .into_iter()
            .map(|name| Target {
                kind,
                name: name.clone(),
                origin: None,
            })
            .collect();
        let ds = ctx.existing_datastore().await?;
        return delete_batch(ctx, &ds, targets, args.skip_not_found, None).await;
    }
    let sources = read_sources(&args.files, ctx.io.stdin)?;
    let mut ds: Option<Datastore> = None;
    for source in &sources {
        let checks = Checks {
            validate: false,
            refuse_internal: true,
        };
        let decoded = match decode_source(source, checks) {
            Ok(d) => d,
            Err(errors) => {
                for e in errors {
                    ctx.error(e);
                }
                ctx.error(format!(
                    "{}: nothing was deleted from this file",
                    source.name
                ));
                continue;
            }
        };
        let targets = decoded
            .iter()
            .map(|d| Target {
                kind: d.resource.kind(),
                name: d.resource.meta().name.clone(),
                origin: Some(format!("{}: {}{}", source.name, d.doc.label, d.ident())),
            })
            .collect();
        let store = match &ds {
            Some(s) => s.clone(),
            None => ds.insert(ctx.existing_datastore().await?).clone(),
        };
        delete_batch(
            ctx,
            &store,
            targets,
            args.skip_not_found,
            Some(&source.name),
        )
        .await?;
    }
    Ok(())
}

async fn delete_batch(
    ctx: &mut Ctx<'_>,
    ds: &Datastore,
    mut targets: Vec<Target>,
    skip_not_found: bool,
    file: Option<&str>,
) -> Result<(), CtlError> {
    loop {
        if targets.is_empty() {
            return Ok(());
        }
        let changes = targets
            .iter()
            .map(|t| Change::Delete {
                kind: t.kind,
                name: t.name.clone(),
                precondition: None,
            })
            .collect();
        let err = match ds.write_all(changes).await {
            Ok(outcomes) => {
                for o in outcomes {
                    let r = o.resource();
                    ctx.out(format!("{} deleted", object_ref(r.kind(), &r.meta().name)))?;
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let index = err.batch_index().filter(|i| *i < targets.len());
        // With --skip-not-found, drop the missing object and try the rest again (still as one
        // batch, so that what is deleted is deleted together).
        if skip_not_found && let (Some(i), Error::NotFound { .. }) = (index, err.root()) {
            let t = targets.remove(i);
            ctx.warn(format!(
                "{} not found, skipped",
                object_ref(t.kind, &t.name)
            ));
            continue;
        }
        match index.map(|i| &targets[i]) {
            Some(Target {
                origin: Some(origin),
                ..
            }) => ctx.error(format!("{origin}: {}", object_problem(&err))),
            Some(t) => ctx.error(format!(
                "{}: {}",
                object_ref(t.kind, &t.name),
                object_problem(&err)
            )),
            None => ctx.error(&err),
        }
        match file {
            Some(f) => ctx.error(format!("{f}: nothing was deleted from this file")),
            None => ctx.error("nothing was deleted"),
        }
        return Ok(());
    }
}
