//! `version [--client]`.

use std::time::Duration;

use tortie_api::Kind;

use crate::cli::VersionArgs;
use crate::{CtlError, Ctx};

/// How long `version` waits for the datastore.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `version`: the client version, then (unless `--client`) the datastore in use, which is
/// read once to prove it answers. An unreachable datastore is an error (exit 1) after the
/// client version was printed, as with `kubectl version`.
pub async fn run(ctx: &mut Ctx<'_>, args: &VersionArgs) -> Result<(), CtlError> {
    ctx.out(format!("Client Version:    {}", env!("CARGO_PKG_VERSION")))?;
    ctx.out(format!("API Version:       {}", tortie_api::API_VERSION))?;
    if args.client {
        return Ok(());
    }
    let url = ctx.datastore_url.clone();
    let probe = async {
        let ds = ctx.existing_datastore().await?;
        ds.list_any(Kind::IPPool, None)
            .await
            .map_err(|e| CtlError::failure(format!("the datastore does not answer: {e}")))?;
        Ok::<_, CtlError>(ds.describe())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(described)) => {
            ctx.out(format!("Datastore URL:     {url}"))?;
            ctx.out(format!("Datastore:         {described}"))
        }
        Ok(Err(e)) => Err(CtlError::failure(format!("datastore {url}: {}", e.message))),
        Err(_) => Err(CtlError::failure(format!(
            "datastore {url}: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}
