//! An export read page by page: the id range of the matches fixed first (a snapshot, so the
//! row count is exact and records arriving meanwhile are left out), then pages of
//! [`EXPORT_PAGE`] records read by keyset and encoded one at a time. Pages are built by the
//! database as NDJSON in one value; CSV and OCSF are encoded here from its parsed lines.

use super::{ExportError, ExportFormat};
use crate::store::{EventFilter, StoreError, StoreReader};

/// Records read and encoded per page.
pub const EXPORT_PAGE: u32 = 1000;

/// A running export.
#[derive(Debug)]
pub struct ExportPages {
    reader: StoreReader,
    filter: EventFilter,
    format: ExportFormat,
    rows: i64,
    started: bool,
    done: bool,
}

impl ExportPages {
    /// Fixes the snapshot of `filter`'s matches (its limit and cursor are replaced) and counts
    /// them.
    pub async fn open(
        reader: StoreReader,
        mut filter: EventFilter,
        format: ExportFormat,
    ) -> Result<Self, ExportError> {
        filter.limit = EXPORT_PAGE;
        filter.after = None;
        filter.id_range = reader.id_window(&filter).await?;
        let rows = match filter.id_range {
            Some(_) => reader.count(&filter).await?,
            None => 0,
        };
        Ok(Self {
            done: filter.id_range.is_none(),
            reader,
            filter,
            format,
            rows,
            started: false,
        })
    }

    /// How many records the export holds.
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// The filter in force, snapshot included (for the access record).
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The next chunk (the CSV header comes with the first) and how many records it holds;
    /// `None` once everything was returned.
    pub async fn next_chunk(&mut self) -> Result<Option<(Vec<u8>, usize)>, ExportError> {
        let mut out = Vec::with_capacity(1024 * EXPORT_PAGE as usize);
        if !self.started {
            self.started = true;
            self.format.start(&mut out);
            if self.done {
                return Ok(Some((out, 0)));
            }
        } else if self.done {
            return Ok(None);
        }
        // Every format starts from the page the database builds as JSON: decoding one value
        // per page and parsing its lines is cheaper than decoding every column of every row.
        let page = self.reader.ndjson_page(&self.filter).await?;
        if self.format == ExportFormat::Ndjson {
            if page.count > 0 {
                out.extend_from_slice(page.lines.as_bytes());
                out.push(b'\n');
            }
        } else {
            for record in page.records() {
                self.format.write(&mut out, &record?)?;
            }
        }
        let (count, last) = (page.count, page.last_id);
        if count > 0 && last.is_none() {
            // Without the last id the next page would start over: stop instead.
            return Err(ExportError::Store(StoreError::Corrupt {
                id: 0,
                message: "a page's records carry no ids".into(),
            }));
        }
        self.done = count < EXPORT_PAGE as usize;
        self.filter.after = last;
        Ok(Some((out, count)))
    }
}
