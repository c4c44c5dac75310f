//! The hand-written OpenAPI 3.0 description served at `/openapi.json`; a test checks it names
//! exactly the routes the server has.

use serde_json::{Value, json};

/// Every route path, as the router and the document spell it.
pub const ROUTES: [&str; 10] = [
    "/health",
    "/metrics",
    "/openapi.json",
    "/api/v1/status",
    "/api/v1/symbols/{symbol}/cob",
    "/api/v1/symbols/{symbol}/heatmap",
    "/api/v1/symbols/{symbol}/candles",
    "/api/v1/symbols/{symbol}/trades",
    "/api/v1/stream",
    "/api/v1/symbols",
];

fn symbol_param() -> Value {
    json!({"name": "symbol", "in": "path", "required": true,
           "description": "Exchange symbol, e.g. ETHUSDT", "schema": {"type": "string"}})
}

fn range_params() -> Vec<Value> {
    vec![
        json!({"name": "from", "in": "query", "required": true,
               "description": "Start, ms since the UNIX epoch (inclusive)",
               "schema": {"type": "integer", "format": "int64"}}),
        json!({"name": "to", "in": "query", "required": true,
               "description": "End, ms since the UNIX epoch (exclusive)",
               "schema": {"type": "integer", "format": "int64"}}),
        json!({"name": "limit", "in": "query", "required": false,
               "description": "Most rows returned (default 1000, at most 100000)",
               "schema": {"type": "integer", "minimum": 1, "maximum": 100000}}),
        json!({"name": "exchange", "in": "query", "required": false,
               "description": "Exchange name (default: the collector's source)",
               "schema": {"type": "string"}}),
    ]
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors() -> Value {
    json!({
        "400": {"description": "Bad parameter", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "401": {"description": "Missing or wrong bearer token (only when a token is configured)"},
        "404": {"description": "Unknown symbol or nothing computed yet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "Database unreachable", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn op(summary: &str, params: Vec<Value>, response: Value) -> Value {
    let mut responses = errors();
    responses["200"] = response;
    json!({"get": {"summary": summary, "parameters": params, "responses": responses}})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let decimal = json!({"type": "string", "description": "Exact decimal", "example": "2500.01"});
    let mut range = vec![symbol_param()];
    range.extend(range_params());
    let mut candle_params = range.clone();
    candle_params.push(json!({"name": "timeframe", "in": "query", "required": true,
        "schema": {"type": "string", "enum": ["1s", "1m", "1h", "1d"]}}));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mmtrader collector API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Market data collected by `mmtrader collect`. COB and heatmap values are the workstation's own structures, with prices and quantities as integers scaled by 10^8; trades and candles carry exact decimal strings."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Trade": {"type": "object", "required": ["id", "time_ms", "price", "qty", "side"], "properties": {
                    "id": {"type": "integer", "format": "int64"},
                    "time_ms": {"type": "integer", "format": "int64"},
                    "price": decimal, "qty": decimal,
                    "side": {"type": "string", "enum": ["buy", "sell"]}}},
                "Candle": {"type": "object", "required": ["open_time_ms", "open", "high", "low", "close", "volume", "trades"], "properties": {
                    "open_time_ms": {"type": "integer", "format": "int64"},
                    "open": decimal, "high": decimal, "low": decimal, "close": decimal, "volume": decimal,
                    "trades": {"type": "integer", "format": "int64"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": op("Liveness and dependency health", vec![], ok("Health", json!({"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "feed_running": {"type": "boolean"}, "database": {"type": "boolean"}, "redis": {"type": "boolean"}}}))),
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "responses": {
                "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": {"description": "Missing or wrong bearer token"}}}},
            "/openapi.json": op("This document", vec![], ok("OpenAPI document", json!({"type": "object"}))),
            "/api/v1/status": op("Connection status of every link and symbol", vec![], ok("Status", json!({"type": "object"}))),
            "/api/v1/symbols": op("Followed symbols", vec![], ok("Symbols", json!({"type": "array", "items": {"type": "string"}}))),
            "/api/v1/symbols/{symbol}/cob": op("Latest COB computation", vec![symbol_param()], ok("COB", json!({"type": "object"}))),
            "/api/v1/symbols/{symbol}/heatmap": op("Newest COB heatmap rows, oldest first", vec![symbol_param(),
                json!({"name": "rows", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}})],
                ok("Heatmap rows", json!({"type": "array", "items": {"type": "object"}}))),
            "/api/v1/symbols/{symbol}/candles": op("Stored candles in a time range", candle_params,
                ok("Candles", json!({"type": "array", "items": {"$ref": "#/components/schemas/Candle"}}))),
            "/api/v1/symbols/{symbol}/trades": op("Stored trades in a time range", range,
                ok("Trades", json!({"type": "array", "items": {"$ref": "#/components/schemas/Trade"}}))),
            "/api/v1/stream": {"get": {"summary": "WebSocket of live updates: JSON messages with type trade, candle or top",
                "responses": {"101": {"description": "Switching to the WebSocket protocol"},
                              "401": {"description": "Missing or wrong bearer token"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_describes_exactly_the_routes() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        let mut routes = ROUTES.to_vec();
        documented.sort_unstable();
        routes.sort_unstable();
        assert_eq!(documented, routes);
        for (path, item) in paths {
            let get = &item["get"];
            assert!(get["summary"].is_string(), "{path}");
            assert!(
                get["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{path}"
            );
            for p in get["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())));
                }
            }
        }
    }
}
