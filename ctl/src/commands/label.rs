//! `label KIND NAME key=value… key-… [--overwrite]`: a compare-and-swap on the version read.

use tortie_datastore::{Change, Outcome};

use crate::cli::{LabelArgs, LabelOp};
use crate::output::{object_name, object_ref};
use crate::{CtlError, Ctx};

/// Runs `label`.
pub async fn run(ctx: &mut Ctx<'_>, args: &LabelArgs) -> Result<(), CtlError> {
    super::refuse_internal(args.kind)?;
    let ds = ctx.existing_datastore().await?;
    let current = super::get_existing(&ds, args.kind, &args.name).await?;
    let mut updated = current.clone();
    let mut refused = Vec::new();
    let mut absent = Vec::new();
    {
        let labels = &mut updated.meta_mut().labels;
        for op in &args.labels {
            match op {
                LabelOp::Set(k, v) => match labels.get(k) {
                    Some(old) if old == v => {}
                    Some(old) if !args.overwrite => refused.push(format!(
                        "label {k:?} already has a value ({old:?}), and --overwrite is not set"
                    )),
                    _ => {
                        labels.insert(k.clone(), v.clone());
                    }
                },
                LabelOp::Remove(k) => {
                    if labels.remove(k).is_none() {
                        absent.push(k.clone());
                    }
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(CtlError::failure(format!(
            "{}: {}; nothing was changed",
            object_name(args.kind, &args.name),
            refused.join("; ")
        )));
    }
    for k in absent {
        ctx.warn(format!("label {k:?} not found"));
    }
    let what = object_ref(args.kind, &args.name);
    if updated.meta().labels == current.meta().labels {
        return ctx.out(format!("{what} not labeled"));
    }
    // `updated` carries the resourceVersion it was read at: the write is a compare-and-swap.
    match ds.write_all(vec![Change::Replace(updated)]).await {
        Ok(outcomes) => match outcomes.first() {
            Some(Outcome::Unchanged(_)) => ctx.out(format!("{what} not labeled")),
            _ => ctx.out(format!("{what} labeled")),
        },
        Err(e) => Err(super::single_write_error(&e)),
    }
}
