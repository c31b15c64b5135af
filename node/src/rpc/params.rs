//! The arguments of one CometBFT call, from a URI query string (`/block?height=5`,
//! `/broadcast_tx_sync?tx="k=v"` or `tx=0x6B3D76`) or from a JSON-RPC 2.0 `params` (an object,
//! or an array in the method's argument order), read with CometBFT's conventions: integers as
//! numbers or strings; in a URI, bytes as `0x` hex or a quoted string; in JSON, bytes as base64
//! (or hex, for `abci_query`'s `data`).

use super::client::{percent_decode, percent_decode_bytes};
use base64::Engine as _;
use serde_json::{Map, Value};

/// An argument that cannot be read: the JSON-RPC error -32602 (invalid params) with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

/// How a JSON-RPC call writes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    /// Base64 (CometBFT's `[]byte`: `tx`, `hash`).
    Base64,
    /// Hex (CometBFT's `HexBytes`: `abci_query`'s `data`).
    Hex,
}

/// The arguments of one call.
#[derive(Debug, Clone)]
pub enum Params {
    /// From a query string: names and percent-decoded raw values.
    Uri(Vec<(String, Vec<u8>)>),
    /// From a JSON-RPC `params` object.
    Json(Map<String, Value>),
}

impl Params {
    /// Parses a query string (`a=1&b="x"`); a name without `=` has an empty value.
    pub fn from_query(query: &str) -> Params {
        let pairs = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode_bytes(v))
            })
            .collect();
        Params::Uri(pairs)
    }

    /// A JSON-RPC `params`: an object, an array (positional, in `names`' order), or nothing.
    pub fn from_json(params: Option<Value>, names: &[&str]) -> Result<Params, ParamError> {
        match params {
            None | Some(Value::Null) => Ok(Params::Json(Map::new())),
            Some(Value::Object(m)) => Ok(Params::Json(m)),
            Some(Value::Array(a)) if a.len() <= names.len() => {
                Ok(Params::Json(names.iter().map(|n| n.to_string()).zip(a).collect()))
            }
            Some(Value::Array(a)) => Err(ParamError(format!(
                "expected at most {} positional params ({}), got {}",
                names.len(),
                names.join(", "),
                a.len()
            ))),
            Some(v) => Err(ParamError(format!("params must be an object or an array, not {v}"))),
        }
    }

    fn uri(&self, name: &str) -> Option<&[u8]> {
        match self {
            Params::Uri(pairs) => pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice()),
            Params::Json(_) => None,
        }
    }

    fn json(&self, name: &str) -> Option<&Value> {
        match self {
            Params::Json(m) => m.get(name).filter(|v| !v.is_null()),
            Params::Uri(_) => None,
        }
    }

    /// An integer argument (`height=5`, `"5"` or `5`); absent or empty is `None`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ParamError> {
        let bad = |v: &dyn std::fmt::Display| ParamError(format!("`{name}`: {v} is not an integer"));
        if let Some(raw) = self.uri(name) {
            let text = String::from_utf8_lossy(raw);
            let t = unquote(text.trim());
            return if t.is_empty() {
                Ok(None)
            } else {
                t.parse().map(Some).map_err(|_| bad(&text))
            };
        }
        match self.json(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(n)),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad(s)),
            Some(v) => Err(bad(v)),
        }
    }

    /// A text argument (`path="/a"` or `path=/a` in a URI).
    pub fn string(&self, name: &str) -> Result<Option<String>, ParamError> {
        if let Some(raw) = self.uri(name) {
            let text =
                String::from_utf8(raw.to_vec()).map_err(|_| ParamError(format!("`{name}` is not UTF-8 text")))?;
            return Ok(Some(unquote(&text).to_string()));
        }
        match self.json(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ParamError(format!("`{name}`: expected a string, got {v}"))),
        }
    }

    /// A boolean argument (`prove=true`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ParamError> {
        if let Some(raw) = self.uri(name) {
            return match unquote(&String::from_utf8_lossy(raw)) {
                "" => Ok(None),
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                v => Err(ParamError(format!("`{name}`: expected true or false, got {v}"))),
            };
        }
        match self.json(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err(ParamError(format!("`{name}`: expected true or false, got {v}"))),
        }
    }

    /// A bytes argument: in a URI `0x` hex or a quoted string (`tx="k=v"`); in JSON base64 or
    /// hex as `json` says.
    pub fn bytes(&self, name: &str, json: Bytes) -> Result<Option<Vec<u8>>, ParamError> {
        if let Some(raw) = self.uri(name) {
            return uri_bytes(name, raw).map(Some);
        }
        let s = match self.json(name) {
            None => return Ok(None),
            Some(Value::String(s)) => s,
            Some(v) => return Err(ParamError(format!("`{name}`: expected a string, got {v}"))),
        };
        let decoded = match json {
            Bytes::Base64 => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("not base64 ({e})")),
            Bytes::Hex => hex::decode(s.trim_start_matches("0x")).map_err(|e| format!("not hex ({e})")),
        };
        decoded.map(Some).map_err(|e| ParamError(format!("`{name}`: {e}")))
    }
}

/// A URI's bytes: `0x` + hex, a quoted string, or (leniently) the text as it is.
fn uri_bytes(name: &str, raw: &[u8]) -> Result<Vec<u8>, ParamError> {
    if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
        return Ok(raw[1..raw.len() - 1].to_vec());
    }
    if let Some(h) = raw.strip_prefix(b"0x").or_else(|| raw.strip_prefix(b"0X")) {
        return hex::decode(h).map_err(|e| {
            ParamError(format!(
                "`{name}`: 0x... is not hex ({e}); quote text instead: {name}=\"...\""
            ))
        });
    }
    Ok(raw.to_vec())
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uri_arguments() {
        let p = Params::from_query("height=5&tx=%22k=v%22&hash=0xABcd&path=%22/a%22&prove=true&h2=%227%22");
        assert_eq!(p.int("height").unwrap(), Some(5));
        assert_eq!(p.int("h2").unwrap(), Some(7));
        assert_eq!(p.int("none").unwrap(), None);
        assert_eq!(p.bytes("tx", Bytes::Base64).unwrap().unwrap(), b"k=v");
        assert_eq!(p.bytes("hash", Bytes::Base64).unwrap().unwrap(), vec![0xab, 0xcd]);
        assert_eq!(p.string("path").unwrap().unwrap(), "/a");
        assert_eq!(p.bool("prove").unwrap(), Some(true));
        let bad = Params::from_query("height=x&hash=0xzz&prove=maybe");
        assert!(bad.int("height").unwrap_err().0.contains("not an integer"));
        assert!(bad.bytes("hash", Bytes::Hex).unwrap_err().0.contains("not hex"));
        assert!(bad.bool("prove").is_err());
        // `tx=k=v` unquoted is taken as it is.
        let p = Params::from_query("tx=k=v");
        assert_eq!(p.bytes("tx", Bytes::Base64).unwrap().unwrap(), b"k=v");
    }

    #[test]
    fn json_arguments() {
        let p = Params::from_json(
            Some(json!({"height": "5", "tx": "az0x", "data": "6b", "n": 3, "prove": false})),
            &[],
        )
        .unwrap();
        assert_eq!(p.int("height").unwrap(), Some(5));
        assert_eq!(p.int("n").unwrap(), Some(3));
        assert_eq!(p.bytes("tx", Bytes::Base64).unwrap().unwrap(), vec![0x6b, 0x3d, 0x31]);
        assert_eq!(p.bytes("data", Bytes::Hex).unwrap().unwrap(), b"k");
        assert_eq!(p.bool("prove").unwrap(), Some(false));
        let p = Params::from_json(Some(json!(["7"])), &["height"]).unwrap();
        assert_eq!(p.int("height").unwrap(), Some(7));
        assert!(Params::from_json(Some(json!([1, 2])), &["height"]).is_err());
        assert!(Params::from_json(Some(json!("x")), &["height"]).is_err());
        let p = Params::from_json(Some(json!({"tx": "!!"})), &[]).unwrap();
        assert!(p.bytes("tx", Bytes::Base64).unwrap_err().0.contains("not base64"));
        assert!(Params::from_json(None, &[]).unwrap().int("height").unwrap().is_none());
    }
}
