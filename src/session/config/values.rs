//! The enum-like settings as enums: each knows its names, parses them
//! case-insensitively and is stored by name, so no code compares a setting
//! as a string.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum whose variants are settings named by lowercase words.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            /// Every name the setting takes.
            pub const NAMES: &'static [&'static str] = &[$($word),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!("{s:?} is not one of {}", Self::NAMES.join(", "))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// Verbosity of the monitor's log (`log-level`).
    LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
    }
}

named! {
    /// Lines of the session log (`log-format`).
    LogFormat {
        /// Readable text.
        Human = "human",
        /// One JSON object per line.
        Json = "json",
    }
}

named! {
    /// Where a brick's changes are found (`change-detector`).
    ChangeDetector {
        /// GlusterFS's changelogs where the brick has them, else the hook.
        Auto = "auto",
        /// The brick's own GlusterFS changelogs.
        Glusterfs = "glusterfs",
        /// georep's journal hook.
        Notify = "notify",
    }
}

/// `metrics-addr`: stored as `""` when off, as earlier versions did.
pub mod optional_addr {
    use super::*;

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// `IP:PORT`, or empty for none.
    pub fn parse(text: &str) -> Result<Option<SocketAddr>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!("{text:?} must be IP:PORT (e.g. 127.0.0.1:9810), or empty for no endpoint")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_print_back() {
        assert_eq!("GlusterFS".parse(), Ok(ChangeDetector::Glusterfs));
        assert_eq!(LogLevel::Debug.to_string(), "debug");
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("human, json"), "{e}");
        for n in LogLevel::NAMES {
            assert_eq!(n.parse::<LogLevel>().unwrap().as_str(), *n);
        }
    }

    #[test]
    fn they_are_stored_by_name() {
        assert_eq!(
            serde_json::to_string(&ChangeDetector::Notify).unwrap(),
            "\"notify\""
        );
        assert_eq!(
            serde_json::from_str::<LogFormat>("\"json\"").unwrap(),
            LogFormat::Json
        );
    }
}
