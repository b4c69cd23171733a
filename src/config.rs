//! Settings: command-line flags, then `ROOMCAST_*` environment variables (clap
//! reads both), then an optional TOML file, then the embedded defaults.

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `roomcast` command line.
#[derive(Debug, Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Self-hosted video rooms and live broadcast"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (REST API, signaling, media, web client).
    Serve(Box<ServeArgs>),
    /// Synthetic participants on GStreamer, for tests and load.
    Loadgen(Box<crate::loadgen::LoadgenArgs>),
}

/// Flags of `roomcast serve`; every one also reads a `ROOMCAST_*` variable.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (lowest precedence after defaults).
    #[arg(long, env = "ROOMCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "ROOMCAST_LISTEN")]
    pub listen: Option<String>,
    /// Base of every URL the API returns (default http://<listen>).
    #[arg(long, env = "ROOMCAST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Directory for the database, secrets, recordings and HLS (default ./data).
    #[arg(long, env = "ROOMCAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin bearer token; generated and stored in the data dir when unset.
    #[arg(long, env = "ROOMCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Comma list of addresses to gather ICE host candidates on (default: all interfaces).
    #[arg(long, env = "ROOMCAST_ICE_LOCAL_IP", value_delimiter = ',')]
    pub ice_local_ip: Vec<IpAddr>,
    /// 1:1 NAT address advertised in place of the host candidates' address.
    #[arg(long, env = "ROOMCAST_ICE_PUBLIC_IP")]
    pub ice_public_ip: Option<IpAddr>,
    /// STUN server, `stun://host:port`.
    #[arg(long, env = "ROOMCAST_STUN_SERVER")]
    pub stun_server: Option<String>,
    /// TURN servers, `turn(s)://user:password@host:port`, comma separated.
    #[arg(long, env = "ROOMCAST_TURN_SERVER", value_delimiter = ',')]
    pub turn_server: Vec<String>,
    /// UDP port range for media, e.g. `40000-40100`.
    #[arg(long, env = "ROOMCAST_RTP_PORT_RANGE")]
    pub rtp_port_range: Option<String>,
    /// Allow room creation without the admin token (rate-limited per address).
    #[arg(long, env = "ROOMCAST_PUBLIC_CREATE")]
    pub public_create: Option<bool>,
    /// How long an empty room lives before it is closed (`600`, `90s`, `10m`, `1h`).
    #[arg(long, env = "ROOMCAST_EMPTY_TIMEOUT")]
    pub empty_timeout: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "ROOMCAST_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Forward the audio of at most this many recent speakers (0: everyone's; default 3).
    #[arg(long, env = "ROOMCAST_AUDIO_LAST_N")]
    pub audio_last_n: Option<usize>,
    /// Directory of the declarative pipeline parts (codecs.toml, output templates; default ./pipelines).
    #[arg(long, env = "ROOMCAST_PIPELINES_DIR")]
    pub pipelines_dir: Option<PathBuf>,
    /// Make sure a room named "Demo room" exists and print its links at start.
    #[arg(long, env = "ROOMCAST_DEMO_ROOM")]
    pub demo_room: bool,
    /// Per-address rate limits and the per-address connection cap (default
    /// true; `false` for load tests from one address, or behind a proxy that limits).
    #[arg(long, env = "ROOMCAST_RATE_LIMIT")]
    pub rate_limit: Option<bool>,
    /// Webhook endpoint (`http://…`) for room, participant, recording and
    /// broadcast events; repeat the flag or give a comma list.
    #[arg(long, env = "ROOMCAST_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,
    /// Key of the webhooks' HMAC-SHA256 signature (default: the admin token).
    #[arg(long, env = "ROOMCAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Let clients ask for simulated faults (the `simulate` signaling
    /// message), for testing clients and operations. Off by default: never
    /// on a server real people use.
    #[arg(long, env = "ROOMCAST_SIMULATE_FAULTS")]
    pub simulate_faults: bool,
}

/// The TOML file: the same names as the flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    ice_local_ip: Option<Vec<IpAddr>>,
    ice_public_ip: Option<IpAddr>,
    stun_server: Option<String>,
    turn_server: Option<Vec<String>>,
    rtp_port_range: Option<String>,
    public_create: Option<bool>,
    empty_timeout: Option<String>,
    log_format: Option<String>,
    audio_last_n: Option<usize>,
    pipelines_dir: Option<PathBuf>,
    webhook_url: Option<OneOrMany>,
    webhook_secret: Option<String>,
    rate_limit: Option<bool>,
    simulate_faults: Option<bool>,
}

/// A TOML value that may be one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

/// ICE settings handed to every peer connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IceSettings {
    /// Addresses to gather host candidates on; empty means every interface.
    pub local_ips: Vec<IpAddr>,
    /// 1:1 NAT address to advertise.
    pub public_ip: Option<IpAddr>,
    /// `stun://host:port`.
    pub stun_server: Option<String>,
    /// `turn://user:pass@host:port` URLs.
    pub turn_servers: Vec<String>,
    /// Inclusive UDP port range.
    pub port_range: Option<(u16, u16)>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Resolved settings of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (port may be 0).
    pub listen: SocketAddr,
    /// Public base URL without trailing slash; `None` means derive from the bound address.
    pub public_url: Option<String>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Admin token from flags/env/file, if any.
    pub admin_token: Option<String>,
    /// ICE.
    pub ice: IceSettings,
    /// Public (token-less) room creation.
    pub public_create: bool,
    /// Empty rooms close after this long.
    pub empty_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Print links of a demo room at start.
    pub demo_room: bool,
    /// Audio of at most this many recent speakers is forwarded (0: all).
    pub audio_last_n: usize,
    /// Declarative pipeline parts.
    pub pipelines_dir: PathBuf,
    /// Webhook endpoints, checked and without duplicates.
    pub webhook_urls: Vec<String>,
    /// Webhook signing key; `None`: the admin token.
    pub webhook_secret: Option<String>,
    /// Per-address rate limits and connection cap on.
    pub rate_limit: bool,
    /// Clients may ask for simulated faults.
    pub simulate_faults: bool,
}

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid {name}: {message}")]
    Invalid {
        /// Setting name.
        name: &'static str,
        /// Why.
        message: String,
    },
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Parses `600`, `90s`, `10m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => return Some(Duration::from_secs(n)),
        "ms" => return Some(Duration::from_millis(n)),
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Checks webhook endpoints: absolute `http://` or `https://` URLs, each once.
pub fn check_webhook_urls(urls: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for raw in urls {
        let u = raw.trim();
        if u.is_empty() {
            continue;
        }
        // The URL itself is not echoed: its path may carry a receiver's credentials.
        let parsed = url::Url::parse(u)
            .map_err(|_| invalid("webhook_url", "not a URL (http://host[:port]/path)"))?;
        match parsed.scheme() {
            // https: certificates checked against the system's roots
            // (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them).
            "http" | "https" if parsed.host_str().is_some() => {}
            _ => {
                return Err(invalid(
                    "webhook_url",
                    "must be an http:// or https:// URL with a host",
                ));
            }
        }
        if !out.iter().any(|o| o == u) {
            out.push(u.to_owned());
        }
    }
    Ok(out)
}

/// Parses `40000-40100`.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

impl Settings {
    /// Resolves flags/env (already merged by clap) over the TOML file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid("listen", format!("{listen_text:?} is not host:port")))?;
        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid("public_url", "must start with http:// or https://"));
        }
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let admin_token = args
            .admin_token
            .clone()
            .or(file.admin_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        let local_ips = if args.ice_local_ip.is_empty() {
            file.ice_local_ip.unwrap_or_default()
        } else {
            args.ice_local_ip.clone()
        };
        let turn_servers = if args.turn_server.is_empty() {
            file.turn_server.unwrap_or_default()
        } else {
            args.turn_server.clone()
        };
        for t in &turn_servers {
            if !(t.starts_with("turn://") || t.starts_with("turns://")) {
                return Err(invalid(
                    "turn_server",
                    format!("{t:?} must start with turn:// or turns://"),
                ));
            }
        }
        let stun_server = args.stun_server.clone().or(file.stun_server);
        if let Some(s) = &stun_server
            && !s.starts_with("stun://")
        {
            return Err(invalid("stun_server", "must start with stun://"));
        }
        let port_range = match args.rtp_port_range.clone().or(file.rtp_port_range) {
            Some(r) => Some(
                parse_port_range(&r)
                    .ok_or_else(|| invalid("rtp_port_range", format!("{r:?} is not LOW-HIGH")))?,
            ),
            None => None,
        };
        let empty_timeout = match args.empty_timeout.clone().or(file.empty_timeout) {
            Some(t) => parse_duration(&t)
                .ok_or_else(|| invalid("empty_timeout", format!("{t:?} is not a duration")))?,
            None => Duration::from_secs(600),
        };
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let webhook_urls = check_webhook_urls(if args.webhook_url.is_empty() {
            file.webhook_url
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
        } else {
            args.webhook_url.clone()
        })?;
        let webhook_secret = args
            .webhook_secret
            .clone()
            .or(file.webhook_secret)
            .filter(|s| !s.is_empty());
        Ok(Self {
            listen,
            public_url,
            data_dir,
            admin_token,
            ice: IceSettings {
                local_ips,
                public_ip: args.ice_public_ip.or(file.ice_public_ip),
                stun_server,
                turn_servers,
                port_range,
            },
            public_create: args.public_create.or(file.public_create).unwrap_or(true),
            empty_timeout,
            log_format,
            demo_room: args.demo_room,
            audio_last_n: args.audio_last_n.or(file.audio_last_n).unwrap_or(3),
            pipelines_dir: args
                .pipelines_dir
                .clone()
                .or(file.pipelines_dir)
                .unwrap_or_else(|| PathBuf::from("./pipelines")),
            webhook_urls,
            webhook_secret,
            rate_limit: args.rate_limit.or(file.rate_limit).unwrap_or(true),
            simulate_faults: args.simulate_faults || file.simulate_faults.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-40100"), Some((40000, 40100)));
        assert_eq!(parse_port_range("5-1"), None);
        assert_eq!(parse_port_range("0-10"), None);
        assert_eq!(parse_port_range("x"), None);
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roomcast.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nempty_timeout = \"2m\"\nice_local_ip = [\"127.0.0.1\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(s.empty_timeout, Duration::from_secs(120));
        assert_eq!(
            s.ice.local_ips,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(s.public_create);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn webhook_urls_from_flags_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "webhook_url = [\"http://a.example/hook\", \"http://b.example/hook\"]\nwebhook_secret = \"whsec-file\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(
            s.webhook_urls,
            ["http://a.example/hook", "http://b.example/hook"]
        );
        assert_eq!(s.webhook_secret.as_deref(), Some("whsec-file"));
        args.webhook_url = vec!["http://c.example/x".into(), "http://c.example/x".into()];
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.webhook_urls, ["http://c.example/x"]);
        std::fs::write(&path, "webhook_url = \"http://a/1,http://b/2\"\n").unwrap();
        args.webhook_url.clear();
        assert_eq!(
            Settings::resolve(&args).unwrap().webhook_urls,
            ["http://a/1", "http://b/2"]
        );
        args.webhook_url = vec!["https://hooks.example.org/x".into()];
        assert_eq!(
            Settings::resolve(&args).unwrap().webhook_urls,
            ["https://hooks.example.org/x"]
        );
        for bad in ["ftp://x/y", "hook.example.org", "https://", "file:///etc/x"] {
            args.webhook_url = vec![bad.into()];
            assert!(
                matches!(Settings::resolve(&args), Err(ConfigError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(
            Settings::resolve(&ServeArgs::default())
                .unwrap()
                .webhook_urls
                .is_empty()
        );
    }

    #[test]
    fn unknown_file_keys_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(
            Settings::resolve(&args),
            Err(ConfigError::Parse { .. })
        ));
    }
}
