//! The ledger as the console shows it: the chain's head and latest signed checkpoint
//! (`GET /api/v1/ledger`), and one record's inclusion proof (`GET /api/v1/events/{id}/proof`),
//! the same document `logout-ledger prove` prints, as the store holds it: the browser checks it
//! itself, so an altered record fails there.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::clock::format_millis;
use crate::ledger::prove::{InclusionProof, ProofFailure, proof_as_stored};
use crate::store::{EventFilter, KindFilter, Order};
use crate::util::hex;

/// `GET /api/v1/ledger`: the chain's last record, the latest checkpoint, the log's public key
/// (when this service signs checkpoints) and the delivery targets.
pub(crate) async fn ledger(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let last = (state.reader)
        .query(&EventFilter {
            kind: KindFilter::All,
            order: Order::Desc,
            limit: 1,
            ..EventFilter::default()
        })
        .await?;
    let head = match last.first() {
        Some(r) => {
            let rows = state.reader.chain_rows(r.id - 1, 1).await?;
            let hash = rows.first().map(|c| hex(&c.entry_hash));
            json!({ "id": r.id, "entry_hash": hash, "received_at": r.received_at })
        }
        None => Value::Null,
    };
    let now = state.clock.now_millis();
    let checkpoint = match state.reader.checkpoints().await?.into_iter().last() {
        Some(c) => json!({
            "tree_size": c.tree_size,
            "root_hash": hex(&c.root),
            "created_at": format_millis(c.created_at),
            "age_seconds": (now - c.created_at).max(0) / 1000,
            "note": c.note,
        }),
        None => Value::Null,
    };
    state
        .record_access(&caller, "read_ledger", "GET /api/v1/ledger", json!({}))
        .await?;
    Ok(Json(json!({
        "head": head,
        "checkpoint": checkpoint,
        "log_key": state.console.log_key,
        "delivery_targets": state.console.delivery_targets,
    })))
}

/// `GET /api/v1/events/{id}/proof`: 409 `not_checkpointed` while no checkpoint covers it.
pub(crate) async fn proof(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let raw = id
        .map(|Path(v)| v)
        .map_err(|e| ApiError::invalid("id", e.body_text()))?;
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::invalid("id", "must be a record's sequence number"))?;
    let result = proof_as_stored(&state.reader, id).await;
    let details = json!({ "filters": { "id": id }, "rows": usize::from(result.is_ok()) });
    state
        .record_access(&caller, "prove", "GET /api/v1/events/{id}/proof", details)
        .await?;
    result.map(Json).map_err(|e| match e {
        ProofFailure::Store(e) => ApiError::Store(e),
        ProofFailure::NotCovered(_) => ApiError::Conflict {
            code: "not_checkpointed",
            message: format!("no signed checkpoint covers record {id} yet"),
        },
        ProofFailure::UnknownRecord(_) => ApiError::NotFound(format!("no record {id}")),
        ProofFailure::Purged(_) => ApiError::Conflict {
            code: "purged",
            message: format!("record {id} was removed by retention; only its hash is kept"),
        },
        other => ApiError::Conflict {
            code: "store_mismatch",
            message: other.to_string(),
        },
    })
}
