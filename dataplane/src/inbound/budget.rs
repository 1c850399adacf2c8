//! Parsing a request body into JSON within a memory budget relative to its size.
//!
//! A JSON object costs far more in memory than in text: `{"role":"user","content":"a"}` is 31
//! bytes on the wire and about 700 in a `serde_json::Value` (a B-tree node, four strings). A body
//! of 250,000 such messages grew the sidecar by 178 MiB before translation and 520 MiB after. So
//! the parse keeps a running estimate of what the tree holds and stops, with a clear error, once
//! it passes [`FACTOR`] times the body plus [`SLACK`]: memory per request stays a bounded multiple
//! of the bytes the sidecar already accepted (`--max-body-bytes`), whatever their shape. Real
//! requests — text, images, tool schemas — cost 1–3× their size and never come near it.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// The tree may hold this many times the body's size…
pub const FACTOR: usize = 8;
/// …plus this much, so that small requests with many small fields always fit.
pub const SLACK: usize = 1 << 20;

/// Estimated heap bytes of one node (the enum itself lives in its parent).
const VALUE: usize = std::mem::size_of::<Value>();
/// A B-tree node for a map's first entries (`serde_json::Map` is a `BTreeMap` here).
const MAP_NODE: usize = 11 * (std::mem::size_of::<String>() + VALUE) + 64;

/// Why a body could not be parsed: not JSON, or JSON too costly to hold.
pub enum Refusal {
    Json(serde_json::Error),
    TooComplex { estimate: usize, budget: usize },
}

/// Parses `bytes` as one JSON value within `FACTOR × len + SLACK` estimated bytes.
pub fn parse(bytes: &[u8]) -> Result<Value, Refusal> {
    let budget = bytes.len().saturating_mul(FACTOR).saturating_add(SLACK);
    let left = Cell::new(budget);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Budgeted { left: &left }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if left.get() == 0 => Err(Refusal::TooComplex { estimate: budget + 1, budget }),
        Err(e) => Err(Refusal::Json(e)),
    }
}

#[derive(Clone, Copy)]
struct Budgeted<'a> {
    left: &'a Cell<usize>,
}

impl Budgeted<'_> {
    fn spend<E: serde::de::Error>(self, bytes: usize) -> Result<(), E> {
        match self.left.get().checked_sub(bytes) {
            Some(rest) => {
                self.left.set(rest);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(E::custom("the request's JSON is too large in memory for its size"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.spend(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.spend(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            self.spend(VALUE)?;
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(MAP_NODE)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend(key.len())?;
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_value_as_serde_json_within_budget() {
        let text = br#"{"model":"m","n":-3,"t":0.5,"big":18446744073709551615,"ok":true,"none":null,
            "messages":[{"role":"user","content":[{"type":"text","text":"h\u00e9llo \"q\""}]}],"e":{},"a":[]}"#;
        let want: Value = serde_json::from_slice(text).unwrap();
        assert!(matches!(parse(text), Ok(v) if v == want));
    }

    #[test]
    fn many_tiny_objects_are_refused_and_bad_json_is_named() {
        let tiny = format!("[{}{{}}]", r#"{"role":"user","content":"a"},"#.repeat(100_000));
        match parse(tiny.as_bytes()) {
            Err(Refusal::TooComplex { budget, .. }) => assert_eq!(budget, tiny.len() * FACTOR + SLACK),
            _ => panic!("100,000 tiny objects fit"),
        }
        let long = format!(r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#, "w ".repeat(4_000_000));
        assert!(parse(long.as_bytes()).is_ok(), "one long message costs about its size");
        assert!(matches!(parse(b"{\"a\":"), Err(Refusal::Json(_))));
        assert!(matches!(parse(b"{} trailing"), Err(Refusal::Json(_))));
    }
}
