//! What the programs share around the contract: configuration from a file and the environment,
//! logs (text for people, JSON lines for log collectors), errors as they print them, the
//! shutdown signal of the servers, and the largest gRPC message either end accepts.
//!
//! A configuration file holds `KEY=VALUE` lines, the format of systemd's `EnvironmentFile=`, with
//! the same keys as the environment variables each option names (`STORAGE_TRACKER_...`). The
//! command line wins over the environment, and the environment over the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable naming a configuration file (also `--config FILE`).
pub const CONFIG_ENV: &str = "STORAGE_TRACKER_CONFIG";

/// Largest gRPC message the scanner and the aggregator send or accept: chunks are a few MiB,
/// this leaves room for long paths.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Completes when the process is asked to stop: SIGTERM (systemd, Slurm) or SIGINT (Ctrl-C).
/// Where SIGTERM cannot be listened for, only SIGINT stops it.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, () = term => {} }
}

/// Why a configuration file cannot be used; each names the file, and the line where one is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: expected KEY=VALUE, got {text:?}", path.display())]
    NotKeyValue {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error(
        "{}:{line}: unknown key {key:?}; keys are the STORAGE_TRACKER_* variables of `--help`",
        path.display()
    )]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
}

/// The `KEY=VALUE` pairs of a configuration file. Blank lines and `#` comments are skipped, a
/// value may be quoted with `"` or `'`, and only `STORAGE_TRACKER_*` and `RUST_LOG` keys are
/// accepted, so that a typo is an error rather than a silently ignored line.
pub fn read_config(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    read_config_with(path, |_| true)
}

/// [`read_config`], with every key one of `known` (or `RUST_LOG`).
pub fn read_config_of(path: &Path, known: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    read_config_with(path, |key| known.iter().any(|k| k == key))
}

fn read_config_with(
    path: &Path,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::NotKeyValue {
                path: path.to_owned(),
                line: n + 1,
                text: line.to_owned(),
            });
        };
        let key = key.trim();
        if !(key.starts_with("STORAGE_TRACKER_") && known(key) || key == "RUST_LOG")
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                line: n + 1,
                key: key.to_owned(),
            });
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// The configuration file named by `--config FILE` (or `--config=FILE`) in `args`, else by
/// `STORAGE_TRACKER_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(rest) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(rest));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// The environment variables that options of `command` (and of its subcommands) read.
pub fn env_names(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(env_names(sub));
    }
    names.sort();
    names.dedup();
    names
}

/// Puts the configuration file's values into the environment where the environment has none.
/// Its keys must be variables that an option of `command` reads ([`env_names`]) or
/// `RUST_LOG`: a key no option reads is a typo, refused with its line. Call it first thing in
/// `main`, before any thread starts (changing the environment is only sound while the process
/// has one thread).
pub fn apply_config_file(command: &clap::Command) -> Result<Option<PathBuf>, ConfigError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args) else {
        return Ok(None);
    };
    let known = env_names(command);
    for (key, value) in read_config_of(&path, &known)? {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called at the start of main, while the process has a single thread.
            unsafe { std::env::set_var(&key, value) };
        }
    }
    Ok(Some(path))
}

/// An error with its causes, each said once: `error: cause: its cause`. A cause already in the
/// text is left out, since many errors (ours with `#[error("...: {source}")]`, and those of the
/// libraries below) put their source in their own message as well as returning it from
/// `source()`, and printing the chain as it is (anyhow's `{:#}`) says such a cause two or three
/// times. This is how the programs print an error that stops them.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = e.source();
    }
    text
}

/// What a gRPC status says, for people: its message (or its code's description when it has
/// none) and its causes, without the code and metadata of `Status`'s own `Display`.
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    if let Some(source) = std::error::Error::source(status) {
        let causes = error_chain(source);
        if !text.contains(&causes) {
            text.push_str(": ");
            text.push_str(&causes);
        }
    }
    text
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields).
    Json,
}

/// Logs to standard error at the level of `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_is_key_value_lines() {
        let dir = std::env::temp_dir().join(format!("st-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api.conf");
        std::fs::write(
            &file,
            "# the API\nSTORAGE_TRACKER_API_LISTEN=127.0.0.1:9000\n\nexport RUST_LOG=\"debug\"\nSTORAGE_TRACKER_DATABASE = 'st'\n",
        )
        .unwrap();
        assert_eq!(
            read_config(&file).unwrap(),
            [
                ("STORAGE_TRACKER_API_LISTEN".into(), "127.0.0.1:9000".into()),
                ("RUST_LOG".into(), "debug".into()),
                ("STORAGE_TRACKER_DATABASE".into(), "st".into()),
            ]
        );
        std::fs::write(&file, "LISTEN=1\n").unwrap();
        assert!(
            read_config(&file)
                .unwrap_err()
                .to_string()
                .contains("unknown key \"LISTEN\"")
        );
        std::fs::write(
            &file,
            "STORAGE_TRACKER_API_LISTEN=1\nSTORAGE_TRACKER_BOGUS=1\n",
        )
        .unwrap();
        let known = ["STORAGE_TRACKER_API_LISTEN".to_owned()];
        assert!(
            read_config_of(&file, &known)
                .unwrap_err()
                .to_string()
                .contains(":2: unknown key \"STORAGE_TRACKER_BOGUS\"")
        );
        std::fs::write(&file, "STORAGE_TRACKER_X\n").unwrap();
        assert!(
            read_config(&file)
                .unwrap_err()
                .to_string()
                .contains(":1: expected KEY=VALUE")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_known_keys_are_the_env_names_of_every_option_and_subcommand() {
        let command = clap::Command::new("p")
            .arg(clap::Arg::new("a").long("a").env("STORAGE_TRACKER_A"))
            .arg(clap::Arg::new("plain").long("plain"))
            .subcommand(
                clap::Command::new("s")
                    .arg(clap::Arg::new("b").long("b").env("STORAGE_TRACKER_B"))
                    .arg(clap::Arg::new("a2").long("a2").env("STORAGE_TRACKER_A")),
            );
        assert_eq!(
            env_names(&command),
            ["STORAGE_TRACKER_A", "STORAGE_TRACKER_B"]
        );
    }

    #[derive(Debug)]
    struct Layer(String, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_messages_say_each_cause_once() {
        // What ClickHouse down looked like: the store's message holds the client's, which holds
        // hyper's, and each is a source again.
        let io = Layer("Connection refused (os error 111)".into(), None);
        let hyper = Layer("client error (Connect)".into(), Some(Box::new(io)));
        let client = Layer(
            "network error: client error (Connect)".into(),
            Some(Box::new(hyper)),
        );
        let store = Layer(
            "ClickHouse at http://h:1: network error: client error (Connect)".into(),
            Some(Box::new(client)),
        );
        let top = Layer("listing the snapshots".into(), Some(Box::new(store)));
        assert_eq!(
            error_chain(&top),
            "listing the snapshots: ClickHouse at http://h:1: network error: client error (Connect): \
             Connection refused (os error 111)"
        );
        let status = tonic::Status::failed_precondition("snapshot 3 is failed");
        assert_eq!(status_text(&status), "snapshot 3 is failed");
        assert_eq!(
            status_text(&tonic::Status::new(tonic::Code::Unavailable, "")),
            tonic::Code::Unavailable.description()
        );
    }

    #[test]
    fn the_config_flag_names_the_file() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["api", "--config", "/etc/a.conf"])),
            Some(PathBuf::from("/etc/a.conf"))
        );
        assert_eq!(
            config_path(&args(&["api", "--listen", "x", "--config=/etc/b.conf"])),
            Some(PathBuf::from("/etc/b.conf"))
        );
    }
}
