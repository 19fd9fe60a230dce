//! Contender for the datastore conformance suite's *no lost update* test: increments
//! `IPAMConfiguration default`'s `maxBlocksPerHost` N times by read → modify → compare-and-swap,
//! retrying on conflict, and prints how many conflicts it saw.
//!
//! Usage: `contend URL N`

use tortie_api::IPAMConfigurationSpec;
use tortie_datastore::{Datastore, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: contend URL N".into());
    };
    let n: u32 = n.parse()?;
    let ds = Datastore::open(&url).await?;
    let mut conflicts = 0u64;
    for _ in 0..n {
        loop {
            let mut cfg = ds
                .get::<IPAMConfigurationSpec>("default")
                .await?
                .ok_or("IPAMConfiguration default is missing")?;
            cfg.spec.max_blocks_per_host += 1;
            match ds.update(cfg).await {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => conflicts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    println!("conflicts={conflicts}");
    Ok(())
}
