//! Websocket control messages (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`,
//! `GET_PROPERTY`) parsed into requests or Binance's error replies.

use serde_json::{Value, json};

/// Max streams per connection, as on Binance.
pub const MAX_STREAMS: usize = 1024;

/// A well-formed control request.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequest {
    /// Add streams.
    Subscribe(Vec<String>),
    /// Remove streams.
    Unsubscribe(Vec<String>),
    /// Ask for the current streams.
    List,
    /// Turn the combined envelope on or off.
    SetCombined(bool),
    /// Ask whether the combined envelope is on.
    GetCombined,
}

/// A parsed message: the request and the id to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// What was asked.
    pub request: ControlRequest,
    /// The request id (integer, string or null), echoed in the reply.
    pub id: Value,
}

fn err(code: i64, msg: String, id: Option<&Value>) -> String {
    match id {
        Some(id) => json!({"code": code, "msg": msg, "id": id}).to_string(),
        None => json!({"code": code, "msg": msg}).to_string(),
    }
}

fn valid_id(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.len() <= 36 && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        _ => false,
    }
}

/// The success reply for a request.
pub fn ok_reply(id: &Value, result: Value) -> String {
    json!({"result": result, "id": id}).to_string()
}

/// Parses one text frame; `Err` carries the error reply to send back.
pub fn parse(text: &str) -> Result<Control, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        err(
            3,
            format!(
                "Invalid JSON: expected value at line {} column {}",
                e.line(),
                e.column()
            ),
            None,
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(err(
            2,
            "Invalid request: expected a JSON object".into(),
            None,
        ));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if !valid_id(&id) {
        return Err(err(
            2,
            "Invalid request: request ID must be an unsigned integer".into(),
            None,
        ));
    }
    let Some(method) = obj.get("method") else {
        return Err(err(
            2,
            format!(
                "Invalid request: missing field `method` at line 1 column {}",
                text.len()
            ),
            Some(&id),
        ));
    };
    let params = obj.get("params");
    let stream_params = |params: Option<&Value>| -> Result<Vec<String>, String> {
        let list = params.and_then(Value::as_array).ok_or_else(|| {
            err(
                2,
                "Invalid request: params must be an array of stream names".into(),
                Some(&id),
            )
        })?;
        if list.len() > MAX_STREAMS {
            return Err(err(
                2,
                "Invalid request: too many parameters".into(),
                Some(&id),
            ));
        }
        list.iter()
            .map(|p| {
                p.as_str().map(str::to_owned).ok_or_else(|| {
                    err(
                        2,
                        "Invalid request: stream names must be strings".into(),
                        Some(&id),
                    )
                })
            })
            .collect()
    };
    let request = match method.as_str() {
        Some("SUBSCRIBE") => ControlRequest::Subscribe(stream_params(params)?),
        Some("UNSUBSCRIBE") => ControlRequest::Unsubscribe(stream_params(params)?),
        Some("LIST_SUBSCRIPTIONS") => ControlRequest::List,
        Some(m @ ("SET_PROPERTY" | "GET_PROPERTY")) => {
            let list = params
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let Some(name) = list.first() else {
                return Err(err(
                    2,
                    "Invalid request: too few parameters".into(),
                    Some(&id),
                ));
            };
            let Some(name) = name.as_str() else {
                return Err(err(
                    2,
                    "Invalid request: property name must be a string".into(),
                    Some(&id),
                ));
            };
            if name != "combined" {
                return Err(err(0, "Unknown property".into(), Some(&id)));
            }
            if m == "GET_PROPERTY" {
                ControlRequest::GetCombined
            } else {
                match list.get(1) {
                    Some(Value::Bool(b)) if list.len() == 2 => ControlRequest::SetCombined(*b),
                    _ => {
                        return Err(err(
                            1,
                            "Invalid value type: expected Boolean".into(),
                            Some(&id),
                        ));
                    }
                }
            }
        }
        other => {
            let shown = other.map_or_else(|| method.to_string(), str::to_owned);
            return Err(err(
                2,
                format!(
                    "Invalid request: unknown variant `{shown}`, expected one of `SUBSCRIBE`, \
                     `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column {}",
                    text.len()
                ),
                Some(&id),
            ));
        }
    };
    Ok(Control { request, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_requests() {
        let c = parse(r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}"#).unwrap();
        assert_eq!(
            c.request,
            ControlRequest::Subscribe(vec!["btcusdt@aggTrade".into()])
        );
        assert_eq!(c.id, json!(1));
        let c = parse(r#"{"method":"LIST_SUBSCRIPTIONS","id":"abc"}"#).unwrap();
        assert_eq!(c.request, ControlRequest::List);
        let c = parse(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#).unwrap();
        assert_eq!(c.request, ControlRequest::SetCombined(true));
        assert_eq!(
            ok_reply(&json!(5), Value::Null),
            r#"{"id":5,"result":null}"#
        );
    }

    #[test]
    fn bad_requests_get_binance_error_codes() {
        let code = |t: &str| {
            serde_json::from_str::<Value>(&parse(t).unwrap_err()).unwrap()["code"].clone()
        };
        assert_eq!(code("{nope"), json!(3));
        assert_eq!(code(r#"{"method":"FOO","id":1}"#), json!(2));
        assert_eq!(code(r#"{"params":[],"id":1}"#), json!(2));
        assert_eq!(
            code(r#"{"method":"LIST_SUBSCRIPTIONS","id":[1]}"#),
            json!(2)
        );
        assert_eq!(
            code(r#"{"method":"GET_PROPERTY","params":["x"],"id":1}"#),
            json!(0)
        );
        assert_eq!(
            code(r#"{"method":"SET_PROPERTY","params":["combined",1],"id":1}"#),
            json!(1)
        );
        let many: Vec<String> = (0..1025).map(|i| format!("s{i}")).collect();
        let t = json!({"method":"SUBSCRIBE","params":many,"id":1}).to_string();
        assert_eq!(code(&t), json!(2));
    }
}
