//! Wires the layers together and runs the HTTP server.

use crate::config::{LogFormat, Settings};
use crate::control::{Control, ControlSettings};
use crate::edge::{App, SystemInfo, listener, ratelimit::Limits};
use crate::store::Store;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Sets up `tracing` output (`RUST_LOG` overrides the default level).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            // hyper warns of every client that misses the header deadline;
            // `edge::listener` logs those at debug (an attack would flood the log).
            "info,warp=warn,hyper=warn,hyper::proto::h1::io=error",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Reads the admin token from the data dir, or creates it. Returns the
/// token and whether it was just created (then it is printed once).
fn admin_token(settings: &Settings) -> anyhow::Result<(String, bool)> {
    if let Some(t) = &settings.admin_token {
        return Ok((t.clone(), false));
    }
    let path = settings.data_dir.join("admin_token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            return Ok((t, false));
        }
    }
    let token = format!("rc_{}", crate::ids::random_string(40));
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok((token, true))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

/// Resolves port 0 to a concrete free port so the public URL can name it.
fn concrete_addr(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(l.local_addr()?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The open room named "Demo room", created when missing.
fn demo_room(control: &Control) -> anyhow::Result<crate::control::RoomView> {
    const NAME: &str = "Demo room";
    if let Some(room) = control
        .list_rooms()
        .into_iter()
        .find(|r| r.room.name == NAME)
    {
        return Ok(room);
    }
    Ok(control.create_room(
        crate::control::CreateRoom {
            name: NAME.to_owned(),
            max_participants: None,
            visibility: None,
            lobby: None,
            mode: None,
        },
        None,
    )?)
}

/// Runs `roomcast serve` until SIGINT/SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let gst_version = crate::media::init().context("GStreamer is not usable")?;
    // GStreamer's warnings and errors go to the same log, filtered by RUST_LOG.
    crate::media::gst_log::install();
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let store = Arc::new(
        Store::open(&settings.data_dir.join("roomcast.db")).context("opening the database")?,
    );
    let (token, created) = admin_token(&settings)?;
    let addr = concrete_addr(settings.listen)?;
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let codecs = Arc::new(crate::media::codecs::probe(&settings.pipelines_dir));
    crate::media::recorder::Templates::load(&settings.pipelines_dir).install();
    tracing::info!(hw = codecs.hw_acceleration(), encoders = ?codecs.encoders, "codecs chosen");
    // Started before the rooms: events of the start (recordings a crash
    // interrupted) are queued, and what an earlier run left is resumed.
    let webhooks = crate::webhooks::Webhooks::start(
        store.clone(),
        crate::webhooks::WebhookSettings {
            urls: settings.webhook_urls.clone(),
            secret: settings
                .webhook_secret
                .clone()
                .unwrap_or_else(|| token.clone()),
        },
    )
    .context("resuming webhook deliveries")?;
    let control = Control::start(
        store,
        ControlSettings {
            public_url: public_url.clone(),
            ice: settings.ice.clone(),
            empty_timeout: settings.empty_timeout,
            audio_last_n: settings.audio_last_n,
            simulate_faults: settings.simulate_faults,
            data_dir: settings.data_dir.clone(),
            codecs: codecs.clone(),
            webhooks,
        },
    )?;
    let demo = if settings.demo_room {
        Some(demo_room(&control)?)
    } else {
        None
    };
    let shutdown_control = control.clone();
    let app = Arc::new(App {
        control,
        admin_token: token.clone(),
        public_create: settings.public_create,
        limits: Limits::new(settings.rate_limit),
        system: SystemInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            gstreamer_version: gst_version.clone(),
            hw_acceleration: codecs.hw_acceleration().to_owned(),
            encoders: codecs.encoders.clone(),
            decoders: codecs.decoders.clone(),
        },
        hls_cache: crate::edge::live::HlsCache::default(),
    });
    let routes = crate::edge::routes(app);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = tcp.local_addr()?;
    let server = listener::serve(
        tcp,
        warp::service(routes),
        listener::ConnectionLimits {
            // Behind one address (a load generator, a proxy) the cap is off with the rate limits.
            per_address: settings
                .rate_limit
                .then_some(listener::MAX_CONNECTIONS_PER_ADDRESS),
            ..Default::default()
        },
        async {
            let _ = http_stopped.await;
        },
    );
    tracing::info!(%bound, gstreamer = %gst_version, "roomcast listening");
    // stdout lines that scripts and tests read.
    println!("roomcast listening on http://{bound}");
    println!("public url: {public_url}");
    if created {
        println!(
            "admin token (stored in {}): {token}",
            settings.data_dir.join("admin_token").display()
        );
    }
    if let Some(room) = demo {
        println!("demo room, host link (moderate): {}", room.host_url);
        println!("demo room, invite link (share):  {}", room.invite_url);
    }
    let _ = std::io::stdout().flush();
    let server = tokio::spawn(server);
    shutdown_signal().await;
    // Graceful: recordings are finished and playable, broadcasts end,
    // clients are told to reconnect (they come back when a server answers
    // again); rooms stay open in the store. Then HTTP stops: open
    // connections get a moment to finish. Bounded either way.
    tracing::info!("stopping: finishing recordings and broadcasts, telling clients");
    let t = std::time::Instant::now();
    let late = shutdown_control.shutdown(SHUTDOWN_ROOMS).await;
    let _ = stop_http.send(());
    if tokio::time::timeout(SHUTDOWN_HTTP, server).await.is_err() {
        tracing::warn!("open connections did not finish within {SHUTDOWN_HTTP:?}");
    }
    tracing::info!(
        ms = t.elapsed().as_millis() as u64,
        rooms_late = late,
        "roomcast stopped"
    );
    Ok(())
}

/// How long rooms get to finish their recordings and broadcasts on SIGTERM.
pub const SHUTDOWN_ROOMS: Duration = Duration::from_secs(8);
/// How long open HTTP connections get after that.
pub const SHUTDOWN_HTTP: Duration = Duration::from_secs(2);
