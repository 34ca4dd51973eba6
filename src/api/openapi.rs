//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document built from the route table the router
//! serves, with the record's fields taken from the CSV field list.

use axum::Json;
use serde_json::{Map, Value, json};

use super::params::{DEFAULT_PAGE, MAX_PAGE};
use super::routes::{Answer, In, Method, Param, ROUTES, Route, Schema};
use crate::export::csv::FIELDS;

fn schema(s: Schema) -> Value {
    match s {
        Schema::Text => json!({"type": "string"}),
        Schema::Time => json!({"type": "string", "format": "date-time"}),
        Schema::Integer => json!({"type": "integer"}),
        Schema::Boolean => json!({"type": "boolean"}),
        Schema::OneOf(values) => json!({"type": "string", "enum": values}),
    }
}

fn parameter(p: &Param) -> Value {
    let mut v = json!({
        "name": p.name,
        "in": match p.location { In::Query => "query", In::Path => "path" },
        "required": p.required,
        "description": p.description,
    });
    let mut s = schema(p.schema);
    if p.name == "limit" {
        s = json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE});
    }
    if p.repeatable {
        v["schema"] = json!({"type": "array", "items": s});
        v["style"] = json!("form");
        v["explode"] = json!(true);
    } else {
        v["schema"] = s;
    }
    v
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn ok_response(answer: Answer) -> Value {
    let json_body = |name: &str| json!({"application/json": {"schema": reference(name)}});
    let (description, content) = match answer {
        Answer::Page => ("A page of records.", json_body("Page")),
        Answer::Record => ("The record.", json_body("RecordWithToken")),
        Answer::Session => ("The session's status.", json_body("SessionStatus")),
        Answer::Summary => ("Counts per group.", json_body("Summary")),
        Answer::Deliveries => ("A page of deliveries.", json_body("DeliveryPage")),
        Answer::Requeued => (
            "How many deliveries are due again.",
            json!({"application/json": {"schema": {"type": "object", "required": ["requeued"], "properties": {"requeued": {"type": "integer"}}}}}),
        ),
        Answer::Ledger => ("The ledger's state.", json!({"application/json": {}})),
        Answer::Proof => (
            "The inclusion proof (docs/audit-format.md).",
            json!({"application/json": {}}),
        ),
        Answer::Document => ("This document.", json!({"application/json": {}})),
        Answer::Stream => (
            "The records, streamed; `X-Export-Rows` says how many.",
            json!({
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            }),
        ),
    };
    json!({"description": description, "content": content})
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": reference("Error")}},
    })
}

fn record_schema() -> Value {
    let properties: Map<String, Value> = FIELDS
        .iter()
        .map(|f| {
            let t = match *f {
                "id" => json!({"type": "integer"}),
                "iat" | "exp" | "duplicate_of" | "http_status" | "token_bytes" => {
                    json!({"type": ["integer", "null"]})
                }
                "claims_verified" => json!({"type": ["boolean", "null"]}),
                "aud" => json!({"type": ["array", "null"], "items": {"type": "string"}}),
                "session_metadata" | "details" => json!({"type": ["object", "null"]}),
                "unverified" => json!({
                    "type": ["object", "null"],
                    "description": "A logout refused before its signature verified: what the \
                        token claimed (iss, alg, kid, typ), never believed; null otherwise.",
                }),
                "kind" | "received_at" => json!({"type": "string"}),
                _ => json!({"type": ["string", "null"]}),
            };
            ((*f).to_owned(), t)
        })
        .collect();
    json!({"type": "object", "properties": properties, "required": FIELDS})
}

/// The answers one route may give.
fn responses(r: &Route) -> Map<String, Value> {
    let mut responses = Map::new();
    responses.insert("200".into(), ok_response(r.answer));
    if !r.params.is_empty() {
        responses.insert("400".into(), error_response("A parameter is invalid."));
    }
    if r.authenticated {
        responses.insert(
            "401".into(),
            error_response("No valid bearer token (`WWW-Authenticate: Bearer`)."),
        );
        responses.insert(
            "503".into(),
            error_response("The store could not be read, or the read not recorded."),
        );
    }
    if r.path.ends_with("{id}") {
        responses.insert("404".into(), error_response("No such record."));
    }
    responses
}

/// One route's `get` operation.
fn operation(r: &Route) -> Value {
    let description = if r.audited {
        format!(
            "{} Leaves an `access` audit record naming the token's label.",
            r.summary
        )
    } else {
        r.summary.to_owned()
    };
    let mut op = json!({
        "operationId": format!("{:?}", r.op),
        "summary": r.summary,
        "description": description,
        "parameters": r.params().map(parameter).collect::<Vec<_>>(),
        "responses": responses(r),
    });
    if r.method == Method::Post {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["target"],
                "additionalProperties": false,
                "properties": {
                    "target": {"type": "string"},
                    "event_id": {"type": "integer"},
                    "dead": {"type": "boolean"},
                },
            }}},
        });
    }
    if !r.authenticated {
        op["security"] = json!([]);
    }
    op
}

/// One delivery of a record to a target.
fn delivery_schema() -> Value {
    let time = json!({"type": ["string", "null"], "format": "date-time"});
    json!({
        "type": "object",
        "required": ["target", "event_id", "delivery_id", "event_type", "received_at", "state",
                     "attempts", "last_attempt_at", "next_attempt_at", "delivered_at", "last_error"],
        "properties": {
            "target": {"type": "string"},
            "event_id": {"type": "integer"},
            "delivery_id": {"type": "string", "description": "webhook-id / Nats-Msg-Id, stable across retries"},
            "event_type": {"type": "string", "enum": ["logout.accepted", "logout.duplicate"]},
            "received_at": {"type": "string", "format": "date-time"},
            "state": {"type": "string", "enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "last_attempt_at": time,
            "next_attempt_at": time,
            "delivered_at": time,
            "last_error": {"type": ["string", "null"]},
        },
    })
}

/// The schemas the operations refer to.
fn components() -> Value {
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Record": record_schema(),
            "RecordWithToken": {
                "allOf": [reference("Record"), {
                    "type": "object",
                    "properties": {
                        "token": {"type": ["string", "null"]},
                        "token_header": {"type": ["object", "null"]},
                        "token_claims": {"type": ["object", "null"]},
                        "key_set_digest": {"type": ["string", "null"], "description": "hex SHA-256 of the archived key set that verified the token"},
                        "deliveries": {"type": "array", "items": reference("Delivery")},
                    },
                }],
            },
            "Delivery": delivery_schema(),
            "DeliveryPage": {
                "type": "object",
                "required": ["deliveries", "next_cursor"],
                "properties": {
                    "deliveries": {"type": "array", "items": reference("Delivery")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "Page": {
                "type": "object",
                "required": ["events", "next_cursor"],
                "properties": {
                    "events": {"type": "array", "items": reference("Record")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "SessionStatus": {
                "type": "object",
                "required": ["sid", "iss", "logged_out", "logged_out_at", "event_id"],
                "properties": {
                    "sid": {"type": "string"},
                    "iss": {"type": "string"},
                    "logged_out": {"type": "boolean"},
                    "logged_out_at": {"type": ["string", "null"], "format": "date-time"},
                    "event_id": {"type": ["integer", "null"]},
                },
            },
            "Summary": {
                "type": "object",
                "required": ["groups", "total", "truncated"],
                "properties": {
                    "groups": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "key": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                            "count": {"type": "integer"},
                        },
                    }},
                    "total": {"type": "integer"},
                    "truncated": {"type": "boolean"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "enum": ["invalid_parameter", "unauthorized", "not_found", "store_unavailable", "not_checkpointed", "purged", "store_mismatch"]},
                    "parameter": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    })
}

/// The whole document.
pub(crate) fn document() -> Value {
    let paths: Map<String, Value> = ROUTES
        .iter()
        .map(|r| (r.path.to_owned(), json!({ r.method.key(): operation(r) })))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "logout-ledger query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Authenticated reads of the Back-Channel Logout audit store.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Json<Value> {
    Json(document())
}
