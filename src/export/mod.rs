//! Export formats shared by the CLI and the query API: NDJSON, CSV (RFC 4180, formulas
//! neutralised) and OCSF Authentication events. Each record is encoded on its own, so an
//! export of any size streams page by page in constant memory.

pub mod csv;
pub mod ocsf;
mod pages;

pub use pages::{EXPORT_PAGE, ExportPages};

use std::str::FromStr;

use crate::store::{StoreError, StoredRecord};

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A record could not be encoded in the format.
    #[error("record {id} cannot be exported: {message}")]
    Encode {
        /// The record.
        id: i64,
        /// What went wrong.
        message: String,
    },
    /// Reading the store failed.
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
}

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON record a line, with the CLI's field names.
    Ndjson,
    /// RFC 4180 CSV: a header row of the field names, CRLF line ends.
    Csv,
    /// One OCSF Authentication (3002) Logoff event a line.
    Ocsf,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ndjson" => Ok(ExportFormat::Ndjson),
            "csv" => Ok(ExportFormat::Csv),
            "ocsf" => Ok(ExportFormat::Ocsf),
            other => Err(format!("format must be ndjson, csv or ocsf, not {other:?}")),
        }
    }
}

impl ExportFormat {
    /// `ndjson`, `csv` or `ocsf`.
    pub fn code(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
            ExportFormat::Ocsf => "ocsf",
        }
    }

    /// The media type of an export in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson | ExportFormat::Ocsf => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// A file name extension for this format.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
            ExportFormat::Ocsf => "ocsf.ndjson",
        }
    }

    /// What comes before the first record (the CSV header row).
    pub fn start(self, out: &mut Vec<u8>) {
        if self == ExportFormat::Csv {
            csv::header(out);
        }
    }

    /// Appends one record.
    pub fn write(self, out: &mut Vec<u8>, record: &StoredRecord) -> Result<(), ExportError> {
        let failed = |e: serde_json::Error| ExportError::Encode {
            id: record.id,
            message: e.to_string(),
        };
        match self {
            ExportFormat::Ndjson => {
                serde_json::to_writer(&mut *out, record).map_err(failed)?;
                out.push(b'\n');
            }
            ExportFormat::Csv => csv::row(out, record).map_err(failed)?,
            ExportFormat::Ocsf => {
                serde_json::to_writer(&mut *out, &ocsf::event(record)?).map_err(failed)?;
                out.push(b'\n');
            }
        }
        Ok(())
    }
}
