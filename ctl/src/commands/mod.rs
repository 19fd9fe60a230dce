//! One module per subcommand.

pub mod completion;
pub mod delete;
pub mod get;
pub mod ipam;
pub mod label;
pub mod node;
pub mod patch;
pub mod validate;
pub mod version;
pub mod write;

use tortie_api::{AnyResource, Kind};
use tortie_datastore::{Datastore, Error};

use crate::CtlError;
use crate::input::internal_kind_message;

/// Fails for kinds that IPAM owns.
pub(crate) fn refuse_internal(kind: Kind) -> Result<(), CtlError> {
    if kind.is_internal() {
        return Err(CtlError::failure(internal_kind_message(kind)));
    }
    Ok(())
}

/// Reads one object that must exist.
pub(crate) async fn get_existing(
    ds: &Datastore,
    kind: Kind,
    name: &str,
) -> Result<AnyResource, CtlError> {
    ds.get_any(kind, name)
        .await
        .map_err(CtlError::failure)?
        .ok_or_else(|| {
            CtlError::failure(Error::NotFound {
                kind,
                name: name.to_string(),
            })
        })
}

/// A datastore error about a single-object write, for users.
pub(crate) fn single_write_error(e: &Error) -> CtlError {
    let root = e.root();
    match root {
        Error::Invalid { kind, name, error } => {
            CtlError::failure(format!("{kind} {name:?}: {error}"))
        }
        other => CtlError::failure(other),
    }
}
