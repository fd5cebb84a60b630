//! The `key=value[,key=value]` form of the device options (`--block`, `--fs`, `--vsock`,
//! `--net`): one parser, one set of rules, one error format.
//!
//! An option declares its keys in a [`Spec`]: required and optional values (`path=FILE`,
//! `id=NAME`) and boolean flags (`ro`). Parsing refuses, naming the option, the input and
//! the key: an empty item, an unknown key, a key given twice, a value key without a value
//! or with an empty one, a flag with a value, and a missing required key. The device then
//! reads typed values from the [`Options`] and reports its own checks with
//! [`Options::invalid`], in the same format.
//!
//! ```
//! use runv_vmm::config::options::{Key, Spec};
//! const DISK: Spec = Spec::new(
//!     "--disk",
//!     &[Key::required("path", "FILE"), Key::flag("ro"), Key::optional("size", "N")],
//! );
//! let o = DISK.parse("path=/img,ro").unwrap();
//! assert_eq!(o.value::<String>("path").unwrap().as_deref(), Some("/img"));
//! assert!(o.flag("ro"));
//! assert_eq!(o.value::<u64>("size").unwrap(), None);
//! let e = DISK.parse("path=/img,path=/b").unwrap_err().to_string();
//! assert_eq!(e, r#"--disk "path=/img,path=/b": path is given twice (expected path=FILE[,ro][,size=N])"#);
//! ```

use std::fmt::{self, Display};
use std::str::FromStr;

/// What kind of key an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `name=PLACEHOLDER`, which must be given.
    Required(&'static str),
    /// `name=PLACEHOLDER`, which may be left out.
    Optional(&'static str),
    /// `name` alone: a boolean, true when given.
    Flag,
}

/// One key an option accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    name: &'static str,
    kind: Kind,
}

impl Key {
    /// `name=PLACEHOLDER`, which must be given.
    pub const fn required(name: &'static str, placeholder: &'static str) -> Key {
        Key {
            name,
            kind: Kind::Required(placeholder),
        }
    }

    /// `name=PLACEHOLDER`, which may be left out.
    pub const fn optional(name: &'static str, placeholder: &'static str) -> Key {
        Key {
            name,
            kind: Kind::Optional(placeholder),
        }
    }

    /// A boolean flag: `name` alone, true when given.
    pub const fn flag(name: &'static str) -> Key {
        Key {
            name,
            kind: Kind::Flag,
        }
    }
}

/// The keys of one option, e.g. `--block`.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    option: &'static str,
    keys: &'static [Key],
}

/// The usage line of a [`Spec`]: its keys in order, optional ones in brackets, e.g.
/// `path=FILE[,ro][,id=NAME]`.
struct Usage<'a>(&'a Spec);

impl Display for Usage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.keys.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match key.kind {
                Kind::Required(p) => write!(f, "{sep}{}={p}", key.name)?,
                Kind::Optional(p) => write!(f, "[{sep}{}={p}]", key.name)?,
                Kind::Flag => write!(f, "[{sep}{}]", key.name)?,
            }
        }
        Ok(())
    }
}

/// A `key=value[,key=value]` option that does not parse or holds an invalid value. Every
/// variant names the option, the input as given and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `a,,b` or a trailing comma (or an empty option).
    #[error("{option} {input:?}: empty item (expected {usage})")]
    EmptyItem {
        /// The option, e.g. `--block`.
        option: &'static str,
        /// The input as given.
        input: String,
        /// The usage line.
        usage: String,
    },
    /// A key the option does not have.
    #[error("{option} {input:?}: unknown key {key:?} (expected {usage})")]
    Unknown {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key as given.
        key: String,
        /// The usage line.
        usage: String,
    },
    /// A key given more than once.
    #[error("{option} {input:?}: {key} is given twice (expected {usage})")]
    Repeated {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key.
        key: &'static str,
        /// The usage line.
        usage: String,
    },
    /// A required key that is not there.
    #[error("{option} {input:?}: {key}= is missing (expected {usage})")]
    Missing {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key.
        key: &'static str,
        /// The usage line.
        usage: String,
    },
    /// `key` or `key=` for a key that takes a value.
    #[error("{option} {input:?}: {key} needs a value, {key}={placeholder} (expected {usage})")]
    NoValue {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key.
        key: &'static str,
        /// What the value stands for, e.g. `FILE`.
        placeholder: &'static str,
        /// The usage line.
        usage: String,
    },
    /// `flag=value` for a boolean flag.
    #[error("{option} {input:?}: {key} is a flag and takes no value (expected {usage})")]
    FlagValue {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key.
        key: &'static str,
        /// The usage line.
        usage: String,
    },
    /// A value the option's reader refused.
    #[error("{option} {input:?}: {key}={value} is invalid: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// The input.
        input: String,
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl Spec {
    /// The option `option` (e.g. `"--block"`) with `keys`, in the order its usage shows.
    pub const fn new(option: &'static str, keys: &'static [Key]) -> Spec {
        Spec { option, keys }
    }

    /// The option's name, e.g. `--block`.
    pub fn option(&self) -> &'static str {
        self.option
    }

    /// The usage line, e.g. `path=FILE[,ro][,id=NAME]`.
    pub fn usage(&self) -> String {
        Usage(self).to_string()
    }

    /// Splits `input` at commas and checks every item against the keys.
    pub fn parse<'a>(&'a self, input: &'a str) -> Result<Options<'a>, Error> {
        let option = self.option;
        let owned = || input.to_string();
        let mut given: Vec<(&'a Key, &'a str)> = Vec::new();
        for item in input.split(',') {
            if item.is_empty() {
                return Err(Error::EmptyItem {
                    option,
                    input: owned(),
                    usage: self.usage(),
                });
            }
            let (name, value) = match item.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (item, None),
            };
            let key = self
                .keys
                .iter()
                .find(|k| k.name == name)
                .ok_or_else(|| Error::Unknown {
                    option,
                    input: owned(),
                    key: name.to_string(),
                    usage: self.usage(),
                })?;
            if given.iter().any(|(k, _)| k.name == key.name) {
                return Err(Error::Repeated {
                    option,
                    input: owned(),
                    key: key.name,
                    usage: self.usage(),
                });
            }
            let value = match (key.kind, value) {
                (Kind::Flag, None) => "",
                (Kind::Flag, Some(_)) => {
                    return Err(Error::FlagValue {
                        option,
                        input: owned(),
                        key: key.name,
                        usage: self.usage(),
                    })
                }
                (Kind::Required(_) | Kind::Optional(_), Some(v)) if !v.is_empty() => v,
                (Kind::Required(placeholder) | Kind::Optional(placeholder), _) => {
                    return Err(Error::NoValue {
                        option,
                        input: owned(),
                        key: key.name,
                        placeholder,
                        usage: self.usage(),
                    })
                }
            };
            given.push((key, value));
        }
        if let Some(missing) = self.keys.iter().find(|k| {
            matches!(k.kind, Kind::Required(_)) && !given.iter().any(|(g, _)| g.name == k.name)
        }) {
            return Err(Error::Missing {
                option,
                input: owned(),
                key: missing.name,
                usage: self.usage(),
            });
        }
        Ok(Options {
            spec: self,
            input,
            given,
        })
    }
}

/// A parsed option: every key known, none twice, every required one there.
#[derive(Debug)]
pub struct Options<'a> {
    spec: &'a Spec,
    input: &'a str,
    given: Vec<(&'a Key, &'a str)>,
}

impl Options<'_> {
    fn raw(&self, name: &str) -> Option<(&'static str, &str)> {
        debug_assert!(
            self.spec.keys.iter().any(|k| k.name == name),
            "{} has no key {name}",
            self.spec.option
        );
        self.given
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, v)| (k.name, *v))
    }

    /// Whether the flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// The value of `name` read as a `T`, or None when it was left out (a required key is
    /// always there). A value `T` refuses is an [`Error::Invalid`] with `T`'s reason.
    pub fn value<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some((key, raw)) = self.raw(name) else {
            return Ok(None);
        };
        raw.parse().map(Some).map_err(|e: T::Err| Error::Invalid {
            option: self.spec.option,
            input: self.input.to_string(),
            key,
            value: raw.to_string(),
            reason: e.to_string(),
        })
    }

    /// The value of the required key `name` read as a `T`.
    pub fn required<T>(&self, name: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let value = self.value(name)?;
        Ok(value.unwrap_or_else(|| panic!("{}: {name} is not a required key", self.spec.option)))
    }

    /// An [`Error::Invalid`] for the value of `name`, for the checks the option's reader
    /// does itself (a range, a length, a character set).
    pub fn invalid(&self, name: &str, reason: impl Display) -> Error {
        let (key, value) = self.raw(name).unwrap_or(("", ""));
        Error::Invalid {
            option: self.spec.option,
            input: self.input.to_string(),
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// For the tests of an option's reader: each `(input, says)` of `cases` is refused with
/// an error that starts with the option and the input, and contains `says`.
#[cfg(test)]
pub(crate) fn assert_refused<T>(spec: &Spec, cases: &[(&str, &str)])
where
    T: FromStr<Err = Error> + std::fmt::Debug,
{
    for (input, says) in cases {
        let e = input.parse::<T>().unwrap_err().to_string();
        let head = format!("{} {input:?}: ", spec.option);
        assert!(e.starts_with(&head), "{input}: {e}");
        assert!(e.contains(says), "{input}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Spec = Spec::new(
        "--net",
        &[
            Key::required("fd", "N"),
            Key::required("mac", "MAC"),
            Key::optional("mtu", "N"),
            Key::flag("ro"),
        ],
    );

    #[test]
    fn usage_lists_keys_in_order_with_optional_ones_bracketed() {
        assert_eq!(NET.usage(), "fd=N,mac=MAC[,mtu=N][,ro]");
        assert_eq!(NET.option(), "--net");
    }

    #[test]
    fn values_flags_and_types_are_read() {
        let o = NET.parse("mac=02:00:00:00:00:01,fd=3,mtu=1400").unwrap();
        assert_eq!(o.required::<i32>("fd").unwrap(), 3);
        assert_eq!(o.value::<u16>("mtu").unwrap(), Some(1400));
        assert_eq!(o.required::<String>("mac").unwrap(), "02:00:00:00:00:01");
        assert!(!o.flag("ro"));
        let o = NET.parse("fd=3,ro,mac=m").unwrap();
        assert!(o.flag("ro"));
        assert_eq!(o.value::<u16>("mtu").unwrap(), None);
        // Everything after the first '=' is the value.
        let o = NET.parse("fd=3,mac=a=b").unwrap();
        assert_eq!(o.required::<String>("mac").unwrap(), "a=b");
    }

    #[test]
    fn each_rule_has_its_error_naming_the_option_input_and_key() {
        for (input, want) in [
            ("", r#"--net "": empty item"#),
            ("fd=3,,mac=m", r#"--net "fd=3,,mac=m": empty item"#),
            ("fd=3,mac=m,", r#"--net "fd=3,mac=m,": empty item"#),
            ("fd=3,mac=m,speed=9", r#"unknown key "speed""#),
            ("fd=3,mac=m,FD=4", r#"unknown key "FD""#),
            ("fd=3,mac=m,fd=4", "fd is given twice"),
            ("fd=3,mac=m,ro,ro", "ro is given twice"),
            ("mac=m", "fd= is missing"),
            ("fd=3", "mac= is missing"),
            ("fd,mac=m", "fd needs a value, fd=N"),
            ("fd=,mac=m", "fd needs a value, fd=N"),
            ("fd=3,mac=m,ro=1", "ro is a flag and takes no value"),
            ("fd=3,mac=m,ro=", "ro is a flag and takes no value"),
        ] {
            let e = NET.parse(input).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--net {input:?}: ")), "{input}: {e}");
            assert!(e.contains(want), "{input}: {e}");
            assert!(e.ends_with("(expected fd=N,mac=MAC[,mtu=N][,ro])"), "{e}");
        }
    }

    #[test]
    fn bad_values_are_named_with_the_reason() {
        let o = NET.parse("fd=x,mac=m,mtu=70000").unwrap();
        let e = o.required::<i32>("fd").unwrap_err().to_string();
        assert_eq!(
            e,
            r#"--net "fd=x,mac=m,mtu=70000": fd=x is invalid: invalid digit found in string"#
        );
        assert!(o
            .value::<u16>("mtu")
            .unwrap_err()
            .to_string()
            .contains("mtu=70000 is invalid"));
        let e = o.invalid("mac", "not a MAC address").to_string();
        assert_eq!(
            e,
            r#"--net "fd=x,mac=m,mtu=70000": mac=m is invalid: not a MAC address"#
        );
    }
}
