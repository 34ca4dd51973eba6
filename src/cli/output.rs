//! Printing records: an aligned table for people; JSON, NDJSON and CSV for programs.

use std::io::Write;

use logout_ledger::export::ExportFormat;
use logout_ledger::store::StoredRecord;
use serde_json::Value;

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Format {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header row; formula-like cells neutralised.
    Csv,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes records in `format`.
pub(super) fn write(
    out: &mut impl Write,
    records: &[StoredRecord],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, records)?;
            writeln!(out)
        }
        Format::Ndjson => encoded(out, records, ExportFormat::Ndjson),
        Format::Csv => encoded(out, records, ExportFormat::Csv),
        Format::Table => table(out, records),
    }
}

/// Writes records with an export encoder (the same bytes as `export` and the API).
fn encoded(
    out: &mut impl Write,
    records: &[StoredRecord],
    format: ExportFormat,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    format.start(&mut buf);
    for r in records {
        format.write(&mut buf, r).map_err(std::io::Error::other)?;
    }
    out.write_all(&buf)
}

/// Widest table cell before the last column.
const MAX_CELL: usize = 48;

/// One record's cells in the table, in the order of its head.
fn row(r: &StoredRecord) -> [String; 8] {
    let meta = match (
        &r.session_metadata,
        r.metadata_status.as_deref().unwrap_or(""),
    ) {
        // A logout refused before its signature verified: what it claimed, as JSON
        // (escaped, so a forger's control characters never reach the terminal).
        _ if r.unverified.is_some() => r
            .unverified
            .as_ref()
            .map(|u| format!("unverified {u}"))
            .unwrap_or_default(),
        // Access and system records: what they record, in the last column.
        (None, "") => r.details.as_ref().map(Value::to_string).unwrap_or_default(),
        (Some(Value::Object(m)), "ok") => m
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        (_, status) => status.to_owned(),
    };
    let reason = match (&r.reason, r.duplicate_of) {
        (_, Some(orig)) => format!("of #{orig}"),
        (Some(code), _) => code.clone(),
        (None, None) => String::new(),
    };
    [
        r.id.to_string(),
        r.received_at.clone(),
        r.outcome
            .clone()
            .or_else(|| r.action.as_ref().map(|a| format!("{}:{a}", r.kind)))
            .unwrap_or_default(),
        reason,
        r.sub.clone().unwrap_or_default(),
        r.sid.clone().unwrap_or_default(),
        r.jti.clone().unwrap_or_default(),
        meta,
    ]
}

fn table(out: &mut impl Write, records: &[StoredRecord]) -> std::io::Result<()> {
    let head = [
        "id",
        "received_at",
        "outcome",
        "reason",
        "sub",
        "sid",
        "jti",
        "metadata",
    ];
    let rows: Vec<[String; 8]> = records.iter().map(row).collect();
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count().min(MAX_CELL));
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // The last column (metadata) is printed whole; the others are cut to fit.
                let c: String = if i + 1 == head.len() {
                    c.clone()
                } else {
                    c.chars().take(MAX_CELL).collect()
                };
                format!("{c:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(head.iter().map(|s| s.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row.to_vec()))?;
    }
    writeln!(
        out,
        "({} record{})",
        records.len(),
        if records.len() == 1 { "" } else { "s" }
    )
}
