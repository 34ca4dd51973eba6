//! `logout-ledger query`: read audit records straight from the store, filtered, a page at a
//! time (`--cursor` continues where the last page stopped).

use anyhow::Context;
use clap::Args;
use logout_ledger::store::{Cursor, MAX_LIMIT, Order};
use serde_json::json;

use super::filters::{FilterArgs, record_access};
use super::output::{self, Format};
use super::store_arg::StoreArg;

/// Flags of `query`.
#[derive(Debug, Args)]
pub(super) struct QueryArgs {
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    filters: FilterArgs,
    /// Most records to print.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    limit: u32,
    /// Sort order: desc (newest first) or asc.
    #[arg(long, default_value = "desc")]
    order: Order,
    /// Continue after the previous page (the cursor printed on standard error).
    #[arg(long)]
    cursor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Prints matching records to standard output, and the next page's cursor to standard error.
pub(super) async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let reader = args.store.open_reader().await?;
    let mut filter = args.filters.filter()?;
    filter.order = args.order;
    filter.limit = args.limit + 1;
    if let Some(c) = &args.cursor {
        let id = Cursor::decode(c)
            .and_then(|c| c.continue_in(args.order))
            .map_err(|e| anyhow::anyhow!("--cursor: {e}"))?;
        filter.after = Some(id);
    }
    let mut records = reader.query(&filter).await.context("query failed")?;
    let more = records.len() > args.limit as usize;
    records.truncate(args.limit as usize);
    filter.limit = args.limit;
    let details = json!({ "filters": filter.describe(), "rows": records.len() });
    record_access(
        &args.store.database,
        "query",
        "logout-ledger query",
        details,
    )
    .await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    output::write(&mut out, &records, args.format).context("cannot write output")?;
    if let (true, Some(last)) = (more, records.last()) {
        let next = Cursor {
            order: args.order,
            id: last.id,
        };
        eprintln!("more records: --cursor {}", next.encode());
    }
    Ok(())
}
