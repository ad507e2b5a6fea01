//! Every dotted key the configuration file accepts, read off the config
//! structs themselves.
//!
//! Why: the configuration reference (`docs/configuration.md`) is checked
//! against this list by a test, so a field added to a config struct without
//! a line in the reference fails the build, and so does a line for a key the
//! daemon would refuse. Listing the keys by hand would only move the drift.
//!
//! How: [`FileConfig`] is deserialized from a *probe*, a deserializer that
//! holds no data. Each struct the derive asks for reveals its field names
//! (`deserialize_struct` receives them all), and every field's value is
//! probed again under its dotted path, so nested tables and `Option` tables
//! (`[ingest.bamboohr]`) are walked too. Leaves get a harmless value; a leaf
//! whose type refuses it (a `SocketAddr` from `""`) aborts that pass, and
//! the next pass skips that field (its name was recorded already).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::value::{MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use super::FileConfig;

/// The prefix of the environment variables that override one key each.
pub const ENV_PREFIX: &str = "ZDS_";

/// Every dotted key a configuration file may set (`amqp.url`,
/// `zoom.rate_limits.light`, `departments`, ...), sorted. Tables that only
/// hold other keys (`amqp`, `ingest.bamboohr`) are not keys themselves.
pub fn accepted_keys() -> Vec<String> {
    let record = Record::default();
    // Each failed pass adds one field to `skip`; there are far fewer fields
    // than this bound.
    for _ in 0..1000 {
        let probe = Probe {
            path: String::new(),
            record: &record,
        };
        match FileConfig::deserialize(probe) {
            Ok(_) => break,
            Err(_) => {
                let Some(failed) = record.failed.borrow_mut().take() else {
                    break;
                };
                if !record.skip.borrow_mut().insert(failed) {
                    break;
                }
            }
        }
    }
    let sections = record.sections.borrow();
    record
        .fields
        .borrow()
        .iter()
        .filter(|key| !sections.contains(*key))
        .cloned()
        .collect()
}

/// The environment variable that overrides `key`, as figment reads it
/// (`ZDS_` prefix, `__` between the levels): `worker.concurrency` is
/// `ZDS_WORKER__CONCURRENCY`.
pub fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// What the passes have seen, shared by every probe of one run.
#[derive(Default)]
struct Record {
    fields: RefCell<BTreeSet<String>>,
    sections: RefCell<BTreeSet<String>>,
    skip: RefCell<BTreeSet<String>>,
    /// The innermost field whose value refused the probe in this pass.
    failed: RefCell<Option<String>>,
}

/// The probe's error: only ever "this leaf refused the probe's value".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(String);

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// A deserializer standing for the value at `path`.
struct Probe<'a> {
    path: String,
    record: &'a Record,
}

macro_rules! probe_number {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom(format!("{}: untyped value", self.path)))
    }

    probe_number! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_u64(1),
        deserialize_i16 => visit_u64(1),
        deserialize_i32 => visit_u64(1),
        deserialize_i64 => visit_u64(1),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_f32 => visit_f64(1.0),
        deserialize_f64 => visit_f64(1.0),
        deserialize_char => visit_char('a'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        // `Some`, so that an optional table's own keys are walked too.
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_seq(SeqDeserializer::new(std::iter::empty::<()>()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        // A free-form table (`[departments]`): a key of its own, no fields.
        visitor.visit_map(MapDeserializer::new(std::iter::empty::<((), ())>()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        let record = self.record;
        record.sections.borrow_mut().insert(self.path.clone());
        let mut paths = Vec::new();
        for field in fields {
            let path = join(&self.path, field);
            record.fields.borrow_mut().insert(path.clone());
            if !record.skip.borrow().contains(&path) {
                paths.push((*field, path));
            }
        }
        visitor.visit_map(Fields {
            paths: paths.into_iter(),
            current: None,
            record,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        let first = variants.first().copied().unwrap_or_default();
        let variant: StrDeserializer<'_, ProbeError> = first.into_deserializer();
        visitor.visit_enum(variant)
    }
}

/// A struct's fields as a map: each name, then a probe for its value.
struct Fields<'a> {
    paths: std::vec::IntoIter<(&'static str, String)>,
    current: Option<String>,
    record: &'a Record,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some((field, path)) = self.paths.next() else {
            return Ok(None);
        };
        self.current = Some(path);
        let name: StrDeserializer<'_, ProbeError> = field.into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let path = self.current.take().unwrap_or_default();
        let probe = Probe {
            path: path.clone(),
            record: self.record,
        };
        seed.deserialize(probe).inspect_err(|_| {
            // Innermost first: an outer field failing because of it is not
            // the one to skip.
            self.record.failed.borrow_mut().get_or_insert(path);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_optional_and_map_keys_are_listed_and_tables_are_not() {
        let keys = accepted_keys();
        for key in [
            "amqp.url",
            "http.listen",
            "ingest.listen",
            "zoom.rate_limits.light",
            "ingest.bamboohr.company_domain",
            "ingest.bamboohr.on_delete",
            "departments",
            "departments_file",
            "worker.concurrency",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        for table in ["amqp", "zoom.rate_limits", "ingest.bamboohr"] {
            assert!(!keys.iter().any(|k| k == table), "{table} is a table");
        }
    }

    #[test]
    fn env_var_is_figments_split_form() {
        assert_eq!(env_var("worker.concurrency"), "ZDS_WORKER__CONCURRENCY");
        assert_eq!(
            env_var("zoom.rate_limits.light"),
            "ZDS_ZOOM__RATE_LIMITS__LIGHT"
        );
    }
}
