//! Which field names a serde type accepts at a given path, for "did you mean" hints.
//!
//! Derived and `k8s-openapi` `Deserialize` impls pass their field list to
//! `Deserializer::deserialize_struct`. A probe deserializer that walks one key (or one
//! sequence item) per level down a path and, at the end, records the list it is given,
//! learns the fields of any nested struct without a schema and without hand-kept lists:
//! `known_fields::<NetworkPolicy>(["spec"])` gives `egress, ingress, podSelector, ...`.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// One step down a path: a mapping key or (any) sequence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Item,
}

/// A struct's name and fields, as its `Deserialize` impl declares them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub name: &'static str,
    pub fields: &'static [&'static str],
}

/// The fields of the struct found at `path` inside `T`, if there is a struct there.
pub(crate) fn known_fields<T: de::DeserializeOwned>(path: &[Seg]) -> Option<Fields> {
    let found = Cell::new(None);
    let _ = T::deserialize(Probe {
        rest: path,
        found: &found,
    });
    found.get()
}

/// The known name closest to `unknown`, if one is close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = unknown.to_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The message for a field that is not known: names the closest known field, if any.
pub(crate) fn unknown_field_message(field: &str, fields: Option<Fields>) -> String {
    let Some(f) = fields else {
        return format!("unknown field `{field}`");
    };
    match closest(field, f.fields.iter().copied()) {
        Some(k) => format!("unknown field `{field}`; did you mean `{k}`?"),
        None => format!(
            "unknown field `{field}`; {} has {}",
            f.name,
            match f.fields {
                [] => "no fields".to_string(),
                list => list
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ),
    }
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct Probe<'a> {
    rest: &'a [Seg],
    found: &'a Cell<Option<Fields>>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.rest.split_first() {
            None => {
                self.found.set(Some(Fields { name, fields }));
                Err(Stop)
            }
            Some((Seg::Key(key), rest)) => visitor.visit_map(OneEntry {
                key: Some(key),
                value: Some(Probe {
                    rest,
                    found: self.found,
                }),
            }),
            Some((Seg::Item, _)) => Err(Stop),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        match self.rest.split_first() {
            Some((Seg::Item, rest)) => visitor.visit_seq(OneItem(Some(Probe {
                rest,
                found: self.found,
            }))),
            _ => Err(Stop),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

struct OneEntry<'a> {
    key: Option<&'a str>,
    value: Option<Probe<'a>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(k) => seed
                .deserialize(IntoDeserializer::<Stop>::into_deserializer(k))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        match self.value.take() {
            Some(p) => seed.deserialize(p),
            None => Err(Stop),
        }
    }
}

struct OneItem<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    #[test]
    fn finds_nested_kubernetes_fields() {
        let f = known_fields::<NetworkPolicy>(&[key("spec")]).unwrap();
        assert_eq!(f.name, "NetworkPolicySpec");
        assert!(f.fields.contains(&"podSelector"));
        let f = known_fields::<Pod>(&[
            key("spec"),
            key("containers"),
            Seg::Item,
            key("ports"),
            Seg::Item,
        ])
        .unwrap();
        assert!(f.fields.contains(&"containerPort"), "{f:?}");
        let f = known_fields::<NetworkPolicy>(&[
            key("spec"),
            key("ingress"),
            Seg::Item,
            key("from"),
            Seg::Item,
        ])
        .unwrap();
        assert!(f.fields.contains(&"namespaceSelector"), "{f:?}");
        // A free-form map (labels) has no field list.
        assert!(known_fields::<Pod>(&[key("metadata"), key("labels")]).is_none());
        assert!(known_fields::<Pod>(&[key("nope")]).is_none());
    }

    #[test]
    fn suggests_close_names_only() {
        let known = ["podSelector", "policyTypes", "ingress", "egress"];
        assert_eq!(closest("podSelecter", known), Some("podSelector"));
        assert_eq!(closest("podselector", known), Some("podSelector"));
        assert_eq!(closest("Ingres", known), Some("ingress"));
        assert_eq!(closest("colour", known), None);
    }
}
