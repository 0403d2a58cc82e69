//! `hookgate spool migrate --from SQLITE --config FILE`: the SQLite spool's pending and dead deliveries
//! and unrouted events, copied into the PostgreSQL spool the config names.

use std::path::Path;
use std::process::ExitCode;

use crate::config::SpoolLocation;
use crate::spool::{postgres, store};

/// Runs the migration; the exit code says how it went (2: a usage problem, 1: a failure).
pub fn run(location: &SpoolLocation, from: &Path, config: &Path) -> ExitCode {
    let SpoolLocation::Postgres(settings) = location else {
        eprintln!(
            "{} names no PostgreSQL spool: set delivery.postgres (and remove delivery.spool_path) in the config to migrate to",
            config.display()
        );
        return ExitCode::from(2);
    };
    if !from.is_file() {
        eprintln!("there is no SQLite spool at {}", from.display());
        return ExitCode::from(2);
    }
    let migrated = (|| {
        let sqlite = store::open(from)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::spool::SpoolError::Open(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(async {
            let mut client = postgres::connect_migrated(settings).await?;
            postgres::migrate::from_sqlite(&sqlite, &mut client).await
        })
    })();
    match migrated {
        Ok(migrated) => {
            println!(
                "copied {} events ({} pending or dead deliveries) from {} into PostgreSQL; {} were there already",
                migrated.events,
                migrated.deliveries,
                from.display(),
                migrated.already_there
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
