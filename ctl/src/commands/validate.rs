//! `validate -f FILE|DIR|-`: decode and check every document without touching the datastore.

use tortie_api::AnyResource;

use crate::cli::ValidateArgs;
use crate::input::{Checks, decode_source_partially, read_sources};
use crate::{CtlError, Ctx};

/// Runs `validate`.
pub fn run(ctx: &mut Ctx<'_>, args: &ValidateArgs) -> Result<(), CtlError> {
    let sources = read_sources(&args.files, ctx.io.stdin)?;
    let checks = Checks {
        validate: true,
        refuse_internal: true,
    };
    let mut valid = 0usize;
    // Pools of every file, to find overlaps between them as the datastore would.
    let mut pools: Vec<(String, tortie_api::IPPool)> = Vec::new();
    for source in &sources {
        let file = decode_source_partially(source, checks);
        for e in file.errors {
            ctx.error(e);
        }
        valid += file.good.len();
        for d in file.good {
            if let AnyResource::IPPool(p) = d.resource {
                pools.push((format!("{}: {}", source.name, d.doc.label), p));
            }
        }
    }
    for (i, (origin, pool)) in pools.iter().enumerate() {
        let clash = pools[..i].iter().find(|(_, other)| {
            other.metadata.name != pool.metadata.name && other.spec.cidr.overlaps(&pool.spec.cidr)
        });
        if let Some((other_origin, other)) = clash {
            ctx.error(format!(
                "{origin} (IPPool {:?}): spec.cidr: \"{}\" overlaps IPPool {:?} ({}) in {other_origin}",
                pool.metadata.name, pool.spec.cidr, other.metadata.name, other.spec.cidr
            ));
            valid -= 1;
        }
    }
    if !ctx.failed() {
        let noun = if valid == 1 { "resource" } else { "resources" };
        ctx.out(format!("{valid} {noun} valid"))?;
    }
    Ok(())
}
