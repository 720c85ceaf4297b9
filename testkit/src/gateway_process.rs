//! A gateway in a process of its own, so that a test can read the gateway's
//! own resident memory (nothing of the test's in it) and stop it with a real
//! SIGTERM. The process is the running test binary run again with one test
//! selected, [`CHILD_TEST`], which must call [`serve_if_child`]: that does
//! what `sluice-gateway`'s `main` does: load the config (file, then
//! `SLUICE_*` overrides), start logging, serve until SIGTERM. (The worker
//! crate's tests cannot name the gateway's binary: Cargo only builds and
//! names a test's own package's binaries.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_gateway::Gateway;
use sluice_shared::config::Config;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The child's config file; set only in the child.
const CONFIG_VAR: &str = "SLUICE_E2E_GATEWAY_CONFIG";
/// Where the child writes `<public address> <admin address>` once bound.
const ADDRS_VAR: &str = "SLUICE_E2E_GATEWAY_ADDRS";
/// The test, at the root of the test binary, that calls [`serve_if_child`]:
/// `#[test] #[ignore] fn gateway_child_process() { serve_if_child() }`.
pub const CHILD_TEST: &str = "gateway_child_process";

pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts a gateway with the config `toml` (written into `dir`) and
    /// `overrides` as `SLUICE_*` environment, as an operator would set them;
    /// returns once it listens.
    pub async fn start(dir: &Path, toml: &str, overrides: &[(&str, String)]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let config = dir.join(format!("gateway-{n}.toml"));
        let addrs = dir.join(format!("gateway-{n}.addrs"));
        let log = dir.join(format!("gateway-{n}.log"));
        std::fs::write(&config, toml).expect("the gateway's config file");
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CONFIG_VAR, &config)
            .env(ADDRS_VAR, &addrs)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the gateway's log file"))
            .kill_on_drop(true);
        for (name, value) in overrides {
            command.env(name, value);
        }
        let child = command.spawn().expect("the gateway process starts");
        let mut process = Self {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            log,
        };
        let bound = super::eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&addrs).is_ok_and(|text| text.ends_with('\n'))
        })
        .await;
        assert!(
            bound,
            "the gateway process did not start: {}",
            process.log_tail()
        );
        let text = std::fs::read_to_string(&addrs).expect("the addresses");
        let mut parts = text
            .split_whitespace()
            .map(|a| a.parse().expect("an address"));
        (process.addr, process.admin_addr) =
            (parts.next().expect("public"), parts.next().expect("admin"));
        process
    }

    pub fn url(&self, source: &str) -> String {
        format!("http://{}/webhooks/{source}", self.addr)
    }

    /// The process's resident memory in bytes (`VmRSS`), while it runs.
    pub fn rss(&self) -> Option<u64> {
        super::resident_bytes(&self.child.id()?.to_string())
    }

    /// Sends SIGTERM, as an orchestrator stopping the gateway does.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the gateway runs");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit (at most `limit`).
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("the gateway process is waited for"),
            Err(_) => panic!(
                "the gateway did not exit within {limit:?}: {}",
                self.log_tail()
            ),
        }
    }

    /// SIGTERM, then the exit, which must be clean.
    pub async fn stop(mut self) {
        self.terminate();
        let status = self.wait(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "the gateway exited with {status}: {}",
            self.log_tail()
        );
    }

    /// The end of the gateway's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        format!("gateway log ({}):\n{}", self.log.display(), &log[start..])
    }
}

/// The child's side: serves a gateway when [`GatewayProcess`] started this
/// binary for it, and does nothing in any other run.
pub fn serve_if_child() {
    let (Some(config), Some(addrs)) = (std::env::var_os(CONFIG_VAR), std::env::var_os(ADDRS_VAR))
    else {
        return;
    };
    let config = Config::load(Some(Path::new(&config))).expect("the gateway's config loads");
    sluice_shared::telemetry::init(&config.telemetry);
    let runtime = sluice_shared::runtime::build(config.gateway.threads).expect("a runtime");
    runtime.block_on(async move {
        let gateway = Gateway::build(config).await.expect("the gateway starts");
        let bound = format!("{} {}\n", gateway.addr(), gateway.admin_addr());
        std::fs::write(addrs, bound).expect("the addresses file");
        let shutdown = CancellationToken::new();
        tokio::spawn(sluice_shared::signals::cancel_on_signal(shutdown.clone()));
        gateway
            .run_until_stopped(shutdown)
            .await
            .expect("the gateway serves until stopped");
    });
}
