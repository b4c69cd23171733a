//! Newtype identifiers. Every id the API hands out has a short type prefix
//! (`r_`, `p_`, `t_`) so that a value pasted into the wrong place is caught
//! by parsing instead of silently matching nothing.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random alphanumeric string of `len` characters (62^len possibilities).
pub fn random_string(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this type starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_string(12)))
            }

            /// Parses an id received from a client; `None` when it cannot be one of ours.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = !rest.is_empty()
                    && rest.len() <= 32
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric());
                ok.then(|| Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// A string with the type's prefix, as [`Self::parse`] accepts it.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": concat!("^", $prefix, "[A-Za-z0-9]{1,32}$"),
                    "examples": [concat!($prefix, "AbCdEf123456")],
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A room (`r_…`).
    RoomId,
    "r_"
);
id_type!(
    /// A participant's session in a room (`p_…`).
    ParticipantId,
    "p_"
);
id_type!(
    /// One published track (`t_…`): the audio or the video of a participant.
    TrackId,
    "t_"
);
id_type!(
    /// A recording (`rec_…`).
    RecordingId,
    "rec_"
);
id_type!(
    /// A live broadcast (`b_…`).
    BroadcastId,
    "b_"
);
id_type!(
    /// One WHEP viewer of a broadcast (`v_…`).
    ViewerId,
    "v_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = RoomId::generate();
        assert!(id.as_str().starts_with("r_"));
        assert_eq!(RoomId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn foreign_strings_are_refused() {
        assert_eq!(RoomId::parse("p_abc"), None);
        assert_eq!(RoomId::parse("r_"), None);
        assert_eq!(RoomId::parse("r_../etc"), None);
        assert_eq!(RoomId::parse(&format!("r_{}", "a".repeat(40))), None);
        assert!(ParticipantId::parse("p_abc123").is_some());
    }
}
