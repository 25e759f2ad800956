//! `--config FILE` (or `$SHOAL_CONFIG`): flags kept in a TOML file.
//!
//! The file names flags by their long names, without the dashes. Table
//! `[global]` holds the flags every command takes (`meta`, `tls`,
//! `insecure`, `timeout`, `log-format`); one table per long-running role
//! (`[meta]`, `[chunk]`, `[s3]`, `[mount]`, `[http]`, `[up]`) holds that
//! role's own, so one file can serve every process of a host. Values:
//! a string or number is the flag's value, `true` gives a bare flag
//! (`false` leaves it out), and an array is joined with commas (`meta` and
//! `peers` take lists that way). Anything else is refused.
//!
//! A role's table may also hold a global flag for that role alone (an S3
//! gateway's own `tls`, say), which wins over `[global]`. The file only
//! fills in: a flag given on the command line wins over the
//! file, and the file wins over environment variables (its flags go on the
//! command line that clap parses). [`expand`] is a pure function from the
//! arguments and the file's text to the arguments clap sees.

use std::ffi::OsString;

use anyhow::{Context, bail};
use toml_edit::{DocumentMut, Item, Value};

/// The tables a config file may hold.
pub const SECTIONS: [&str; 7] = ["global", "up", "meta", "chunk", "s3", "mount", "http"];

/// Global flags that take a value as the next argument.
const GLOBAL_WITH_VALUE: [&str; 5] = ["meta", "timeout", "log-format", "tls", "config"];

/// The config file a command line names: `--config FILE`, `--config=FILE`,
/// else `$SHOAL_CONFIG`.
pub fn path_in(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    std::env::var_os("SHOAL_CONFIG").filter(|v| !v.is_empty())
}

/// The command line with the file's flags added, or `args` unchanged when
/// no config file is named. Errors name the file.
pub fn apply(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(path) = path_in(&args) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    expand(args, &text).with_context(|| format!("in {}", path.to_string_lossy()))
}

/// `args` (the program name first) with the flags of `text`'s `[global]`
/// table after the program name and those of the subcommand's table right
/// after the subcommand, each only when the command line does not give it.
pub fn expand(args: Vec<OsString>, text: &str) -> anyhow::Result<Vec<OsString>> {
    let doc: DocumentMut = text.parse().context("not valid TOML")?;
    for (key, item) in doc.iter() {
        if !item.is_table() {
            bail!("'{key}' is outside any table; put flags every command takes under [global]");
        }
        if !SECTIONS.contains(&key) {
            bail!("unknown table [{key}]; the tables are {}", SECTIONS.map(|s| format!("[{s}]")).join(", "));
        }
    }
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let given = |flag: &str| {
        let long = format!("--{flag}");
        words.iter().take_while(|w| *w != "--").any(|w| *w == long || w.starts_with(&format!("{long}=")))
    };
    let at = subcommand_index(&words);
    let role = at.map(|i| words[i].as_str()).filter(|w| SECTIONS.contains(w) && *w != "global");
    let in_role =
        |key: &str| role.and_then(|r| doc.get(r)).and_then(Item::as_table).is_some_and(|t| t.contains_key(key));
    let flags_of = |section: &str| -> anyhow::Result<Vec<OsString>> {
        let mut out = vec![];
        let Some(table) = doc.get(section).and_then(Item::as_table) else { return Ok(out) };
        for (key, item) in table.iter() {
            // The command line wins, and a role's table over [global].
            if given(key) || (section == "global" && in_role(key)) {
                continue;
            }
            let value = item.as_value().with_context(|| format!("[{section}] {key}: not a plain value"))?;
            match flag_value(value).with_context(|| format!("[{section}] {key}"))? {
                Some(FlagValue::Bare) => out.push(format!("--{key}").into()),
                Some(FlagValue::Text(v)) => out.extend([format!("--{key}").into(), v.into()]),
                None => {}
            }
        }
        Ok(out)
    };
    let Some((program, rest)) = args.split_first() else { return Ok(args) };
    let mut out = vec![program.clone()];
    out.extend(flags_of("global")?);
    for (i, a) in rest.iter().enumerate() {
        out.push(a.clone());
        if let Some(role) = role
            && Some(i + 1) == at
        {
            out.extend(flags_of(role)?);
        }
    }
    Ok(out)
}

/// What one value in the file puts on the command line.
#[derive(Debug, PartialEq)]
enum FlagValue {
    /// The flag alone (`true`).
    Bare,
    /// The flag and this value.
    Text(String),
}

fn flag_value(v: &Value) -> anyhow::Result<Option<FlagValue>> {
    Ok(Some(match v {
        Value::String(s) => FlagValue::Text(s.value().clone()),
        Value::Integer(i) => FlagValue::Text(i.value().to_string()),
        Value::Float(f) => FlagValue::Text(f.value().to_string()),
        Value::Boolean(b) if *b.value() => FlagValue::Bare,
        Value::Boolean(_) => return Ok(None),
        Value::Array(items) => {
            let parts = items
                .iter()
                .map(|i| match i {
                    Value::String(_) | Value::Integer(_) | Value::Float(_) => match flag_value(i)? {
                        Some(FlagValue::Text(t)) => Ok(t),
                        _ => unreachable!("strings and numbers are text"),
                    },
                    _ => bail!("a list may hold only strings and numbers"),
                })
                .collect::<anyhow::Result<Vec<String>>>()?;
            FlagValue::Text(parts.join(","))
        }
        Value::Datetime(_) | Value::InlineTable(_) => bail!("not a string, number, boolean or list"),
    }))
}

/// Where the subcommand is in `words` (the program name first): the first
/// word that is neither a flag nor a global flag's value.
fn subcommand_index(words: &[String]) -> Option<usize> {
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        if w == "--" {
            return None;
        }
        match w.strip_prefix("--") {
            Some(name) if GLOBAL_WITH_VALUE.contains(&name) => i += 2,
            Some(_) => i += 1,
            None if w.starts_with('-') => i += 1,
            None => return Some(i),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], text: &str) -> anyhow::Result<Vec<String>> {
        let args = args.iter().map(OsString::from).collect();
        Ok(expand(args, text)?.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    const FILE: &str = r#"
[global]
meta = ["10.0.0.1:7100", "10.0.0.2:7100"]
tls = "/etc/shoal/tls"
insecure = false

[meta]
id = 2
listen = "0.0.0.0:7100"
advertise = "10.0.0.2:7100"

[chunk]
dir = "/var/lib/shoal/chunk"

[mount]
read-only = true

[s3]
tls = "/etc/shoal/s3-tls"
"#;

    #[test]
    fn global_flags_go_first_and_the_role_table_after_its_subcommand() {
        let got = run(&["shoal", "meta", "--dir", "/d"], FILE).unwrap();
        assert_eq!(
            got,
            [
                "shoal",
                "--meta",
                "10.0.0.1:7100,10.0.0.2:7100",
                "--tls",
                "/etc/shoal/tls",
                "meta",
                "--id",
                "2",
                "--listen",
                "0.0.0.0:7100",
                "--advertise",
                "10.0.0.2:7100",
                "--dir",
                "/d"
            ]
        );
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let got = run(&["shoal", "--meta=1.2.3.4:1", "mount", "--read-only", "/mnt"], FILE).unwrap();
        assert_eq!(got, ["shoal", "--tls", "/etc/shoal/tls", "--meta=1.2.3.4:1", "mount", "--read-only", "/mnt"]);
        let got = run(&["shoal", "meta", "--id", "3", "--listen", "127.0.0.1:1"], FILE).unwrap();
        assert_eq!(&got[5..], ["meta", "--advertise", "10.0.0.2:7100", "--id", "3", "--listen", "127.0.0.1:1"]);
    }

    #[test]
    fn a_role_table_overrides_a_global_flag_for_that_role() {
        let got = run(&["shoal", "s3"], FILE).unwrap();
        assert_eq!(got, ["shoal", "--meta", "10.0.0.1:7100,10.0.0.2:7100", "s3", "--tls", "/etc/shoal/s3-tls"]);
    }

    #[test]
    fn the_subcommand_is_found_after_global_flags_and_their_values() {
        let got = run(&["shoal", "--timeout", "5s", "--config", "f.toml", "chunk"], FILE).unwrap();
        assert_eq!(got.last().unwrap(), "/var/lib/shoal/chunk");
        assert_eq!(got[got.len() - 3], "chunk");
        // Client commands get only [global]; a table's name as an argument is no subcommand.
        let got = run(&["shoal", "put", "meta", "/meta"], FILE).unwrap();
        assert_eq!(&got[5..], ["put", "meta", "/meta"]);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let e = |text: &str| run(&["shoal", "ls"], text).unwrap_err().to_string();
        assert!(e("meta = 1").contains("outside any table"));
        assert!(e("[metta]\nid = 1").contains("unknown table [metta]"));
        assert!(e("[global\n").contains("not valid TOML"));
        let err = format!("{:#}", run(&["shoal", "meta"], "[meta]\nid = 1979-05-27").unwrap_err());
        assert!(err.contains("[meta] id") && err.contains("not a string"), "{err}");
        let err = format!("{:#}", run(&["shoal", "meta"], "[meta]\npeers = [[1]]").unwrap_err());
        assert!(err.contains("only strings and numbers"), "{err}");
    }

    #[test]
    fn the_example_in_deploy_parses_for_every_role() {
        use clap::Parser;
        let example = include_str!("../../../deploy/shoal.toml");
        for role in [&["meta"][..], &["chunk"], &["s3"], &["mount", "/mnt/shoal"], &["ls", "/"]] {
            let args = run(&[&["shoal"][..], role].concat(), example).unwrap();
            if let Err(e) = crate::cli::Cli::try_parse_from(&args) {
                panic!("deploy/shoal.toml for {role:?} gives {args:?}, which clap refuses: {e}");
            }
        }
    }

    #[test]
    fn no_config_leaves_the_arguments_alone() {
        let args: Vec<OsString> = ["shoal", "ls", "/"].iter().map(OsString::from).collect();
        assert_eq!(path_in(&args), std::env::var_os("SHOAL_CONFIG").filter(|v| !v.is_empty()));
        let with: Vec<OsString> = ["shoal", "--config", "x.toml", "ls"].iter().map(OsString::from).collect();
        assert_eq!(path_in(&with), Some("x.toml".into()));
        let eq: Vec<OsString> = ["shoal", "ls", "--config=y.toml"].iter().map(OsString::from).collect();
        assert_eq!(path_in(&eq), Some("y.toml".into()));
    }
}
