//! `get KIND [NAME…] [-o table|wide|yaml|json] [-l SELECTOR]`.

use tortie_api::{AnyResource, Kind};
use tortie_datastore::{Datastore, Error};

use crate::cli::{GetArgs, OutputFormat};
use crate::output::{json_list, render_json, render_yaml};
use crate::table::{self, TableContext};
use crate::{CtlError, Ctx};

/// Runs `get`.
pub async fn run(ctx: &mut Ctx<'_>, args: &GetArgs) -> Result<(), CtlError> {
    let ds = ctx.existing_datastore().await?;
    let kind = args.kind;
    let mut items = Vec::new();
    let mut missing = Vec::new();
    if args.names.is_empty() {
        items = ds
            .list_any(kind, args.selector.as_ref())
            .await
            .map_err(CtlError::failure)?
            .items;
    } else {
        for name in &args.names {
            match ds.get_any(kind, name).await.map_err(CtlError::failure)? {
                Some(r) => items.push(r),
                None => missing.push(name.clone()),
            }
        }
    }
    // One name asked for: the object itself; otherwise a list.
    let single = args.names.len() == 1;
    let text = match args.output {
        OutputFormat::Table | OutputFormat::Wide if items.is_empty() => {
            if missing.is_empty() {
                let _ = writeln!(ctx.io.stderr, "No {} found.", kind.plural());
            }
            String::new()
        }
        OutputFormat::Table | OutputFormat::Wide => {
            let tctx = table_context(&ds, kind).await?;
            table::render(kind, &items, args.output == OutputFormat::Wide, &tctx)
        }
        OutputFormat::Yaml => render_yaml(&items),
        OutputFormat::Json if single => items
            .first()
            .map(|r| render_json(&r.to_json()))
            .unwrap_or_default(),
        OutputFormat::Json => render_json(&json_list(&items)),
    };
    ctx.io.stdout.write_all(text.as_bytes())?;
    for name in missing {
        ctx.error(Error::NotFound { kind, name });
    }
    Ok(())
}

/// Reads what the table of `kind` needs besides the objects.
async fn table_context(ds: &Datastore, kind: Kind) -> Result<TableContext, CtlError> {
    let mut tctx = TableContext::default();
    if kind == Kind::Node {
        tctx.bgp_configurations = ds
            .list_any(Kind::BGPConfiguration, None)
            .await
            .map_err(CtlError::failure)?
            .items
            .into_iter()
            .filter_map(|r| match r {
                AnyResource::BGPConfiguration(c) => Some(c),
                _ => None,
            })
            .collect();
    }
    Ok(tctx)
}
