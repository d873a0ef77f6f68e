//! [`Secret`]: a setting that must never be printed.
//!
//! Credentials in the configuration (`ingest.ip_salt`, the S3 keys, every
//! value of `lake.options`, `server.metrics_token`,
//! `social.bluesky_app_password`) and the AI providers' keys are held in a
//! `Secret`. Its `Debug`, `Display` and `Serialize` print `***` when it is
//! set and an empty string when it is not (so `crow config show` says
//! whether a secret is set, never what it is, and `crow config default`
//! still loads back). Reading the value takes an explicit
//! [`Secret::expose`], which is easy to find in a review.
//!
//! It deserializes from a plain string, so the TOML file and the `CROW_*`
//! variables accept the same values as before.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a set secret prints as.
pub const MASK: &str = "***";

/// A secret string: printed as `***`, read with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Use it only to hand the secret to what needs it
    /// (a hash, a request header, a storage client), never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            MASK
        }
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Secret::new(v)
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Secret(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

thread_local! {
    /// Set only inside [`serialize_exposed`].
    static EXPOSED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with secrets serializing as their values. Only for the
/// configuration's own round trip through a TOML tree (applying `CROW_*`
/// variables), whose result never leaves this crate as text.
pub(crate) fn serialize_exposed<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            EXPOSED.with(|e| e.set(self.0));
        }
    }
    let _reset = Reset(EXPOSED.with(|e| e.replace(true)));
    f()
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if EXPOSED.with(Cell::get) {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str(self.shown())
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Holder {
        token: Secret,
        empty: Secret,
    }

    #[test]
    fn never_printed() {
        let h: Holder = toml::from_str("token = \"hunter2-value\"\nempty = \"\"\n").unwrap();
        assert_eq!(h.token.expose(), "hunter2-value");
        assert!(h.empty.is_empty() && !h.token.is_empty());
        for text in [
            format!("{h:?}"),
            format!("{:#?}", h),
            format!("{}", h.token),
            toml::to_string(&h).unwrap(),
            serde_json::to_string(&h).unwrap(),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains(MASK), "set secrets show as {MASK}: {text}");
        }
        assert_eq!(
            toml::to_string(&h).unwrap(),
            "token = \"***\"\nempty = \"\"\n"
        );
    }

    #[test]
    fn exposed_only_inside_the_round_trip() {
        let h = Holder {
            token: "v".into(),
            empty: Secret::default(),
        };
        let tree = serialize_exposed(|| toml::Value::try_from(&h)).unwrap();
        assert_eq!(tree.try_into::<Holder>().unwrap(), h);
        let masked = toml::Value::try_from(&h).unwrap();
        assert_eq!(masked["token"].as_str(), Some(MASK));
        // A panic inside does not leave secrets exposed.
        let _ = std::panic::catch_unwind(|| serialize_exposed(|| panic!("boom")));
        assert_eq!(
            toml::to_string(&h).unwrap(),
            "token = \"***\"\nempty = \"\"\n"
        );
    }
}
